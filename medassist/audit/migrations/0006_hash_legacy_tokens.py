"""Issue 13: API tokens are stored hashed (django-rest-knox) instead of in plain text (DRF's authtoken).

Every token still in DRF's ``authtoken_token`` table becomes a knox token with the same value (so its
clients keep working) that expires ``MEDASSIST_TOKEN_TTL_HOURS`` from now; then the plain-text rows are
deleted. The table itself is left (empty): its app is no longer installed, so nothing manages it. A
database that never had the table (a fresh install) has nothing to do.
"""
from django.conf import settings
from django.db import migrations
from django.utils import timezone

LEGACY_TABLE = "authtoken_token"


def forwards(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id FROM {LEGACY_TABLE}")
        legacy = cursor.fetchall()
    ttl = settings.REST_KNOX.get("TOKEN_TTL")
    expiry = timezone.now() + ttl if ttl else None
    AuthToken = apps.get_model("knox", "AuthToken")
    AuthToken.objects.bulk_create(
        [AuthToken(digest=hash_token(key), token_key=key[:CONSTANTS.TOKEN_KEY_LENGTH], user_id=user_id, expiry=expiry)
         for key, user_id in legacy], ignore_conflicts=True)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {LEGACY_TABLE}")


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0005_truncate_trigger_and_actions"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
