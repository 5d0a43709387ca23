"""Operations endpoints and commands: /health/, /metrics, create_api_user."""
from io import StringIO

from django.core.management import call_command
from rest_framework.authtoken.models import Token


def test_health_reports_database_broker_and_workers(client, db):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert "count" in body["checks"]["workers"]
    assert body["status"] in ("ok", "degraded")


def test_metrics_exposes_jobs_by_status_and_queue_depth(client, api):
    api.post("/api/v1/jobs/", {"kind": "literature", "items": ["Aspirin and stroke."]}, format="json")
    text = client.get("/metrics").content.decode()
    assert 'medassist_jobs{status="queued"} 1.0' in text
    assert 'medassist_queue_depth{queue="batch"}' in text


def test_create_api_user_prints_only_the_token(db):
    out = StringIO()
    call_command("create_api_user", "portal", "--staff", stdout=out)
    token = out.getvalue().strip()
    assert Token.objects.get(key=token).user.is_staff
    again = StringIO()
    call_command("create_api_user", "portal", stdout=again)
    assert again.getvalue().strip() == token
