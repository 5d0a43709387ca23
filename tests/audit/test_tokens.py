"""Issue 13, deployment defaults (tokens) and audit item 4 (token creation and rotation): API tokens are
stored hashed, expire, can be rotated by command and API, and every issue/rotation is audited."""
import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from medassist.audit.models import AuditEvent
from medassist.audit.services import audit_verify_chain, os_actor


def status_with(token: str, path: str = "/api/v1/jobs/") -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get(path).status_code


def test_tokens_are_stored_hashed_and_expire_per_the_setting(alice, settings):
    token = alice.api_token
    assert status_with(token) == 200
    # The token appears nowhere in the database (only knox's 15-character lookup prefix does).
    with connection.cursor() as cursor:
        cursor.execute("SELECT digest, token_key FROM knox_authtoken")
        rows = cursor.fetchall()
    assert rows and all(token not in digest and token != key for digest, key in rows)
    row = AuthToken.objects.get(user=alice)
    expected = timezone.now() + dt.timedelta(hours=settings.MEDASSIST_TOKEN_TTL_HOURS)
    assert abs((row.expiry - expected).total_seconds()) < 60
    AuthToken.objects.filter(pk=row.pk).update(expiry=timezone.now() - dt.timedelta(seconds=1))
    assert status_with(token) == 401  # expired: refused (and the row deleted by knox)
    assert not AuthToken.objects.filter(user=alice).exists()


def test_rotate_token_command_revokes_old_tokens_and_is_audited(alice):
    old = alice.api_token
    out = StringIO()
    call_command("rotate_token", "alice", stdout=out)
    new = out.getvalue().strip()
    assert new != old and status_with(old) == 401 and status_with(new) == 200
    event = AuditEvent.objects.get(action="token.rotate")
    assert event.actor_id is None and event.actor_username == os_actor() and event.object_id == str(alice.pk)
    assert event.detail["revoked"] == 1 and event.detail["via"] == "command" and new not in str(event.detail)
    assert audit_verify_chain().ok


def test_rotate_token_command_refuses_an_unknown_user(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no user"):
        call_command("rotate_token", "nobody", stdout=StringIO())


def test_rotating_through_the_api_replaces_only_the_token_used(alice, api):
    other = AuthToken.objects.create(user=alice)[1]
    response = api.post("/api/v1/auth/token/rotate/")
    assert response.status_code == 201, response.content
    new = response.json()["token"]
    assert response.json()["expiry"]
    assert status_with(alice.api_token) == 401 and status_with(new) == 200 and status_with(other) == 200
    event = AuditEvent.objects.get(action="token.rotate")
    assert event.actor_username == "alice" and event.detail["via"] == "api" and event.ip == "127.0.0.1"


def test_rotation_needs_authentication(db):
    assert APIClient().post("/api/v1/auth/token/rotate/").status_code in (401, 403)


def test_create_api_user_issue_is_audited_with_the_os_user(db):
    out = StringIO()
    call_command("create_api_user", "portal", stdout=out)
    token = out.getvalue().strip()
    event = AuditEvent.objects.get(action="token.create")
    assert event.actor_username == os_actor() and event.detail["username"] == "portal"
    assert token not in str(event.detail) and status_with(token) == 200


def test_a_token_that_is_not_utf8_is_a_401_not_a_500(db):
    client = APIClient()
    response = client.get("/api/v1/jobs/", HTTP_AUTHORIZATION="Token \xff\xfe")
    assert response.status_code == 401
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == 1


def test_plain_text_tokens_of_an_older_install_are_hashed_and_keep_working(db, django_user_model):
    import importlib
    from types import SimpleNamespace

    from django.apps import apps

    migration = importlib.import_module("medassist.audit.migrations.0006_hash_legacy_tokens")
    user = django_user_model.objects.create_user("legacy")
    key = "0123456789abcdef0123456789abcdef01234567"  # DRF's format: 40 hex characters
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS authtoken_token "
                       "(key varchar(40) PRIMARY KEY, created timestamp with time zone NOT NULL, user_id integer NOT NULL)")
        cursor.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)",
                       [key, timezone.now(), user.pk])
    migration.forwards(apps, SimpleNamespace(connection=connection))
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0  # the plain-text copy is gone
    assert status_with(key) == 200  # the client's token still works, now stored hashed
    assert AuthToken.objects.get(user=user).expiry is not None
