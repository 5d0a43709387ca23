"""Deployment defaults fail closed (issue 13): secret key, HTTPS/cookie/proxy settings, who sees /metrics
and worker names, the SQLite file's mode, worker recycling limits."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

ROOT = Path(__file__).resolve().parents[2]
KEY = "k" * 50
SHOWN = ("DEBUG", "SECRET_KEY", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER",
         "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CELERY_WORKER_MAX_TASKS_PER_CHILD",
         "CELERY_WORKER_MAX_MEMORY_PER_CHILD")
# Each scenario imports config.settings afresh with exactly these deployment variables (and no .env).
SCENARIOS = {
    "nothing set": {},
    "debug off, no key": {"DJANGO_DEBUG": "0"},
    "debug off, empty key": {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": ""},
    "debug off, placeholder key": {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "insecure-local-dev-only-change-me"},
    "key set": {"DJANGO_SECRET_KEY": KEY},
    "debug on, no key": {"DJANGO_DEBUG": "1"},
    "env file": {"MEDASSIST_ENV_FILE": "<env file>"},
    "https": {"DJANGO_SECRET_KEY": KEY, "MEDASSIST_HTTPS": "true"},
    "https behind a proxy": {"DJANGO_SECRET_KEY": KEY, "MEDASSIST_HTTPS": "true", "MEDASSIST_TRUSTED_PROXIES": "10.0.0.1"},
}
RUNNER = """
import importlib, json, os, sys
base, scenarios, shown = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}
for name, env in scenarios.items():
    os.environ.clear()
    os.environ.update({**base, **env})
    sys.modules.pop("config.settings", None)
    try:
        module = importlib.import_module("config.settings")
        out[name] = {key: getattr(module, key) for key in shown}
    except Exception as exc:
        out[name] = {"error": type(exc).__name__, "message": str(exc)}
print(json.dumps(out))
"""


def clean_env(tmp_path: Path) -> dict:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "MEDASSIST_", "DATABASE_URL", "CELERY_BROKER_URL"))}
    return {**base, "DJANGO_SETTINGS_MODULE": "config.settings", "MEDASSIST_ENV_FILE": "",
            "MEDASSIST_VAR_DIR": str(tmp_path / "var")}


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("deploy")
    env_file = tmp_path / "env"
    env_file.write_text(f"DJANGO_SECRET_KEY={KEY}\n")
    wanted = {name: {k: (str(env_file) if v == "<env file>" else v) for k, v in env.items()}
              for name, env in SCENARIOS.items()}
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(clean_env(tmp_path)), json.dumps(wanted),
                           json.dumps(SHOWN)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- secret key ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nothing set", "debug off, no key", "debug off, empty key",
                                  "debug off, placeholder key"])
def test_without_debug_a_missing_or_placeholder_secret_key_stops_startup(scenarios, name):
    assert scenarios[name].get("error") == "ImproperlyConfigured", scenarios[name]
    assert "DJANGO_SECRET_KEY" in scenarios[name]["message"]


def test_a_secret_key_from_the_environment_or_the_env_file_or_debug_starts(scenarios):
    assert scenarios["key set"]["SECRET_KEY"] == KEY and scenarios["key set"]["DEBUG"] is False
    assert scenarios["env file"]["SECRET_KEY"] == KEY  # scripts/setup.sh writes one to .env
    assert scenarios["debug on, no key"]["DEBUG"] is True  # local development only


# --- HTTPS, cookies, proxies, worker limits -------------------------------------------------------------

def test_production_defaults_secure_cookies_and_no_proxy_header(scenarios):
    values = scenarios["key set"]
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SESSION_COOKIE_HTTPONLY"]
    assert values["SECURE_PROXY_SSL_HEADER"] is None  # no trusted proxy: X-Forwarded-Proto is never read
    assert (values["SECURE_SSL_REDIRECT"], values["SECURE_HSTS_SECONDS"]) == (False, 0)  # plain-HTTP localhost
    assert values["CELERY_WORKER_MAX_TASKS_PER_CHILD"] > 0 and values["CELERY_WORKER_MAX_MEMORY_PER_CHILD"] > 0


def test_behind_tls_redirects_and_hsts_and_the_proxy_header_only_with_trusted_proxies(scenarios):
    values = scenarios["https"]
    assert values["SECURE_SSL_REDIRECT"] and values["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert scenarios["https behind a proxy"]["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


@override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
                   MEDASSIST_TRUSTED_PROXIES=["10.0.0.1"])
def test_x_forwarded_proto_is_believed_only_from_a_trusted_proxy(client, db):
    spoofed = client.get("/api/v1/models/", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="203.0.113.9")
    assert spoofed.status_code == 301 and spoofed["Location"].startswith("https://")  # still plain HTTP
    proxied = client.get("/api/v1/models/", HTTP_X_FORWARDED_PROTO="https", REMOTE_ADDR="10.0.0.1")
    assert proxied.status_code in (401, 403)  # arrived over HTTPS: no redirect, on to authentication
    assert client.get("/health/").status_code != 301  # the in-container healthcheck stays on HTTP


# --- /metrics and /health/ -------------------------------------------------------------------------------

@override_settings(MEDASSIST_METRICS_TOKEN="scrape-token-123")
def test_metrics_only_for_staff_or_the_metrics_token(client, admin_client, make_user):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-123").status_code == 200
    assert admin_client.get("/metrics").status_code == 200
    client.force_login(make_user("plain"))
    assert client.get("/metrics").status_code == 403


def test_metrics_token_unset_means_no_token_works(client, db):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_health_names_workers_only_to_staff(client, admin_client, db):
    anonymous = client.get("/health/").json()["checks"]["workers"]
    assert "count" in anonymous and "names" not in anonymous
    assert "names" in admin_client.get("/health/").json()["checks"]["workers"]


# --- SQLite file mode --------------------------------------------------------------------------------------

def test_sqlite_files_are_owner_only(tmp_path):
    """A new database file is created 0600; an existing looser one is tightened when a connection opens it."""
    fresh, existing = tmp_path / "fresh.sqlite3", tmp_path / "existing.sqlite3"
    existing.touch()
    os.chmod(existing, 0o644)
    code = ("import django, sys; django.setup(); from django.db import connection\n"
            "connection.ensure_connection(); connection.close()\n"
            "connection.settings_dict['NAME'] = sys.argv[1]; connection.ensure_connection(); print(connection.vendor)")
    done = subprocess.run([sys.executable, "-c", code, str(existing)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**clean_env(tmp_path), "DJANGO_SECRET_KEY": KEY,
                                            "DATABASE_URL": f"sqlite:///{fresh}"})
    assert done.returncode == 0 and done.stdout.strip() == "sqlite", done.stderr
    for path in (fresh, existing):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
