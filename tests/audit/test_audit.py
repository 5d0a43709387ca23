"""The audit trail: hash chain, tamper detection, append-only on Postgres, admin views."""
import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from medassist.audit.models import AuditEvent
from medassist.audit.services import audit_record, audit_verify_chain
from tests.conftest import require, tamper_with_audit_table, using_postgres


def three_events(user=None):
    return [audit_record(action="job.view", actor=user, object_type="jobs.job", object_id=str(i),
                         detail={"n": i, "note": "π ≠ 3"}) for i in range(3)]


def test_events_are_hash_chained(alice):
    a, b, c = three_events(alice)
    assert a.prev_hash == "0" * 64 and b.prev_hash == a.hash and c.prev_hash == b.hash
    assert audit_verify_chain().ok
    stored = AuditEvent.objects.get(pk=b.pk)
    assert stored.actor_username == "alice" and stored.detail == {"n": 1, "note": "π ≠ 3"}


def test_audit_verify_command_passes_on_an_intact_chain(db, capsys):
    three_events()
    call_command("audit_verify")
    assert "audit chain OK: 3 events verified" in capsys.readouterr().out


_tamper = tamper_with_audit_table


def test_a_changed_row_is_detected_and_named(db, capsys):
    _, b, _ = three_events()
    _tamper("UPDATE audit_auditevent SET detail = %s WHERE id = %s", ['{"n": 99}', b.pk])
    report = audit_verify_chain()
    assert not report.ok and report.broken_id == b.pk and "altered" in report.reason
    with pytest.raises(SystemExit) as exit_info:
        call_command("audit_verify")
    assert exit_info.value.code == 1
    assert f"BROKEN at event {b.pk}" in capsys.readouterr().err


def test_a_deleted_row_is_detected_at_the_next_event(db):
    _, b, c = three_events()
    _tamper("DELETE FROM audit_auditevent WHERE id = %s", [b.pk])
    report = audit_verify_chain()
    assert not report.ok and report.broken_id == c.pk and "removed" in report.reason


def test_postgres_refuses_update_and_delete(db):
    require(using_postgres(), "the append-only trigger exists on Postgres only (DATABASE_URL is not Postgres)")
    (event, *_) = three_events()
    for sql in ("UPDATE audit_auditevent SET action = 'x' WHERE id = %s", "DELETE FROM audit_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [event.pk])
    assert audit_verify_chain().ok


def test_admin_change_and_failed_login_are_audited(admin_client, django_user_model, client):
    from django.contrib.auth.models import Group

    response = admin_client.post("/admin/auth/group/add/", {"name": "reviewers"})
    assert response.status_code == 302, response.content[:2000]
    change = AuditEvent.objects.get(action="admin.change")
    group = Group.objects.get(name="reviewers")
    assert change.object_type == "auth.group" and change.object_id == str(group.pk)
    assert change.detail["operation"] == "add" and change.actor_username == "admin"
    django_user_model.objects.create_user("bob", password="pw")
    assert client.post("/admin/login/", {"username": "bob", "password": "wrong"}).status_code == 200
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.detail == {"username": "bob", "via": "password"}
    assert audit_verify_chain().ok


def test_audit_admin_is_read_only_and_verifies_and_exports(admin_client, db):
    events = three_events()
    changelist = admin_client.get("/admin/audit/auditevent/?action=job.view")
    assert changelist.status_code == 200 and b"job.view" in changelist.content
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == 403
    detail = admin_client.get(f"/admin/audit/auditevent/{events[0].pk}/change/")
    assert detail.status_code == 200 and b"Save" not in detail.content
    ids = [str(e.pk) for e in events]
    exported = admin_client.post("/admin/audit/auditevent/", {"action": "export_csv", "_selected_action": ids})
    assert exported["Content-Type"] == "text/csv" and exported.content.count(b"\n") == 4
    verified = admin_client.post("/admin/audit/auditevent/", {"action": "verify_chain", "_selected_action": ids},
                                 follow=True)
    assert b"Audit chain OK" in verified.content


def test_job_and_model_version_admin_pages_render(admin_client, api):
    from medassist.registry.services import model_version_register

    job_id = api.post("/api/v1/jobs/", {"kind": "literature", "items": ["Aspirin after myocardial infarction."]},
                      format="json").json()["id"]
    assert admin_client.get("/admin/jobs/job/").status_code == 200
    page = admin_client.get(f"/admin/jobs/job/{job_id}/change/")
    assert page.status_code == 200 and b"pending" in page.content
    version = model_version_register(role="generator", name="tiny", format="torch-fp32")
    assert admin_client.get("/admin/registry/modelversion/").status_code == 200
    assert admin_client.get(f"/admin/registry/modelversion/{version.pk}/change/").status_code == 200
