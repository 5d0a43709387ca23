"""Issue 13: a statement-level trigger refuses TRUNCATE of the audit table on Postgres (the row trigger of
0002 never fires for TRUNCATE, so `TRUNCATE` and `manage.py flush` emptied the chain unnoticed); and the
new audited actions.

The trigger stops the table's owner and superusers by mistake; they can still disable it on purpose,
which is why the application connects as a role that owns nothing (`manage.py audit_db_role`,
docs/security.md) and why `audit_verify --anchor` checks the head kept outside the database.
"""
from django.db import migrations, models

CREATE = """
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();
"""
DROP = "DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0004_auditevent_hash_version'),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('job.submit', 'Job Submit'), ('job.view', 'Job View'), ('job.cancel', 'Job Cancel'), ('job.finish', 'Job Finish'), ('results.read', 'Results Read'), ('results.export', 'Results Export'), ('auth.login_failed', 'Login Failed'), ('admin.change', 'Admin Change'), ('model.promote', 'Model Promote'), ('model.promote_refused', 'Model Promote Refused'), ('model.rollback', 'Model Rollback'), ('audit.verify', 'Audit Verify'), ('auth.throttled', 'Auth Throttled'), ('job.list', 'Job List'), ('job.not_found', 'Job Not Found'), ('corpus.write', 'Corpus Write'), ('token.create', 'Token Create'), ('token.rotate', 'Token Rotate')], db_index=True, max_length=40),
        ),
    ]
