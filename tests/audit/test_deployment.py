"""Issue 13, audit item 3 (deployment): compose connects web and workers as the plain role that
`audit_db_role` grants (setup migrates as the owner and creates it), gives them the HMAC key from .env
only, and runs `audit_anchor` on a schedule into a volume of its own."""
from urllib.parse import urlsplit

from tests.test_compose import argv, compose, environment, mounts, services


def test_web_and_workers_connect_as_the_app_role_and_setup_as_the_owner():
    app_url = urlsplit(environment(compose()["x-app"])["DATABASE_URL"])
    assert app_url.username == "medassist_app" and app_url.password == "from-dot-env-postgres_app_password"
    for name in ("web", "worker-interactive", "worker-batch", "worker-training", "audit-anchor"):
        assert urlsplit(environment(services()[name])["DATABASE_URL"]).username == "medassist_app", name
    setup = services()["setup"]
    assert urlsplit(environment(setup)["DATABASE_URL"]).username == services()["postgres"]["environment"]["POSTGRES_USER"]
    assert "audit_db_role medassist_app --create" in argv(setup["command"])[2]
    assert environment(setup)["POSTGRES_APP_PASSWORD"] == "from-dot-env-postgres_app_password"


def test_the_audit_key_comes_from_env_and_the_anchor_is_written_on_a_schedule():
    assert environment(compose()["x-app"])["MEDASSIST_AUDIT_HMAC_KEY"] == "from-dot-env-medassist_audit_hmac_key"
    anchor = services()["audit-anchor"]
    script = argv(anchor["command"])[2]
    assert "manage.py audit_anchor --anchor /var/lib/medassist/audit/anchor.jsonl" in script and "sleep" in script
    assert mounts(anchor)["/var/lib/medassist/audit"][0] in (compose().get("volumes") or {})
    assert environment(anchor)["MEDASSIST_AUDIT_ANCHOR_INTERVAL"] == "3600"
