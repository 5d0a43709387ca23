"""Issue 13, audit item 3 (Postgres): TRUNCATE is refused by a statement-level trigger, and the role the
application connects as (granted by `manage.py audit_db_role`) can append and read audit events but not
change, delete, TRUNCATE them nor disable or drop the triggers."""
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from medassist.audit.models import AuditEvent
from medassist.audit.services import audit_record, audit_verify_chain
from tests.conftest import require, using_postgres

ROLE = "medassist_audit_test_app"


def run(sql, params=(), role=None):
    """Run ``sql`` as ``role``; on failure the caller's savepoint rollback undoes the SET ROLE too."""
    with connection.cursor() as cursor:
        if role:
            cursor.execute(f'SET ROLE "{role}"')
        cursor.execute(sql, params)
        if role:
            cursor.execute("RESET ROLE")


def refused(sql, role=None, match=None):
    with pytest.raises(DatabaseError, match=match), transaction.atomic():
        run(sql, role=role)


@pytest.fixture
def postgres(db):
    require(using_postgres(), "database roles and triggers are Postgres features (DATABASE_URL is not Postgres)")


def test_truncate_is_refused_even_for_the_owner(postgres):
    event = audit_record(action="job.view", detail={"n": 1})
    # conftest switches this trigger off for Django's test flush; this test's transaction switches it back on.
    run("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_no_truncate")
    refused("TRUNCATE audit_auditevent", match="append-only")
    refused("TRUNCATE audit_auditevent RESTART IDENTITY CASCADE", match="append-only")
    assert AuditEvent.objects.filter(pk=event.pk).exists() and audit_verify_chain().ok


def test_the_app_role_can_only_append_and_read(postgres, monkeypatch):
    monkeypatch.setenv("MEDASSIST_TEST_APP_PASSWORD", "pw-not-used-to-log-in")
    # CREATE ROLE is transactional: the role disappears with the test's rollback.
    call_command("audit_db_role", ROLE, "--create", "--password-env", "MEDASSIST_TEST_APP_PASSWORD", stdout=StringIO())
    first = audit_record(action="job.view", detail={"n": 1})
    with transaction.atomic():
        run("SELECT 1", role=ROLE)
        with connection.cursor() as cursor:
            cursor.execute(f'SET ROLE "{ROLE}"')
            second = audit_record(action="job.view", detail={"n": 2})  # appending works
            assert AuditEvent.objects.count() == 2  # reading works
            cursor.execute("RESET ROLE")
    for sql in ("UPDATE audit_auditevent SET action = 'x'", "DELETE FROM audit_auditevent",
                "TRUNCATE audit_auditevent"):
        refused(sql, role=ROLE, match="permission denied")
    for sql in ("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only",
                "ALTER TABLE audit_auditevent DISABLE TRIGGER ALL",
                "DROP TRIGGER audit_event_no_truncate ON audit_auditevent",
                "DROP TABLE audit_auditevent"):
        refused(sql, role=ROLE, match="must be (the )?owner")
    run("UPDATE jobs_job SET status = status", role=ROLE)  # the rest of the schema stays writable
    assert list(AuditEvent.objects.values_list("pk", flat=True)) == [first.pk, second.pk]
    assert audit_verify_chain().ok


def test_a_superuser_role_is_refused(postgres):
    run(f'CREATE ROLE "{ROLE}" SUPERUSER')
    with pytest.raises(CommandError, match="superuser"):
        call_command("audit_db_role", ROLE, stdout=StringIO())
