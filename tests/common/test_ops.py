"""Operations endpoints and commands: /health/, /metrics, create_api_user."""
from io import StringIO

from django.core.management import call_command
from rest_framework.test import APIClient


def test_health_reports_database_broker_and_workers(client, db):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert "count" in body["checks"]["workers"]
    assert body["status"] in ("ok", "degraded")


def test_metrics_exposes_jobs_by_status_and_queue_depth(admin_client, api):
    api.post("/api/v1/jobs/", {"kind": "literature", "items": ["Aspirin and stroke."]}, format="json")
    text = admin_client.get("/metrics").content.decode()  # staff or the metrics token (issue 13)
    assert 'medassist_jobs{status="queued"} 1.0' in text
    assert 'medassist_queue_depth{queue="batch"}' in text


def test_create_api_user_prints_only_the_token(db):
    from knox.models import AuthToken

    out = StringIO()
    call_command("create_api_user", "portal", "--group", "job-viewers", stdout=out)
    token = out.getvalue().strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/jobs/").status_code == 200
    user = AuthToken.objects.get(token_key=token[:15]).user
    assert user.has_perm("jobs.view_all_jobs") and not user.is_staff
    # Stored hashed (issue 13): the token cannot be shown again, so a second run issues another one.
    assert not AuthToken.objects.filter(digest__contains=token).exists()
    again = StringIO()
    call_command("create_api_user", "portal", stdout=again)
    assert again.getvalue().strip() not in ("", token) and AuthToken.objects.filter(user=user).count() == 2
