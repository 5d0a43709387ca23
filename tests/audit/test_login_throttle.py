"""Issue 13, audit item 2 and privacy (audit content): failed authentication is throttled by IP and token
prefix before any audit row is written, repeats are collapsed into events with a count, the admin
password login is throttled too, and a mistyped password is never stored as a username."""
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from medassist.audit import guard
from medassist.audit.models import AuditEvent
from medassist.audit.services import audit_verify_chain

LIMIT = 5


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def time(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(guard, "time", fake)
    return fake


@pytest.fixture(autouse=True)
def _small_limit(settings):
    settings.MEDASSIST_AUTH_FAILURE_LIMIT = LIMIT
    settings.MEDASSIST_AUTH_FAILURE_WINDOW = 60
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast: not what is tested


def get(token, ip="10.0.0.7"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/v1/jobs/", REMOTE_ADDR=ip)


def failures():
    return list(AuditEvent.objects.filter(action__startswith="auth.").order_by("id"))


def test_a_bad_token_flood_writes_two_rows_then_gets_429(db, clock):
    codes = [get(f"{n:02x}" * 32).status_code for n in range(20)]  # a new token (and prefix) each time
    assert codes[:LIMIT] == [401] * LIMIT and set(codes[LIMIT:]) == {429}
    events = failures()
    assert [e.action for e in events] == ["auth.login_failed", "auth.throttled"]
    assert events[1].detail["failures"] == LIMIT and events[1].detail["blocked"] == ["ip"]
    assert events[1].detail["unwritten_before"] == LIMIT - 2  # failures 2..LIMIT-1, collapsed into it
    assert events[0].ip == events[1].ip == "10.0.0.7"
    # The next window: the first failure's event says how many attempts went unwritten before it.
    clock.now += 60
    assert get("f" * 64).status_code == 401
    last = failures()[-1]
    assert last.action == "auth.login_failed" and last.detail["unwritten_before"] == 20 - LIMIT  # the refused ones
    assert audit_verify_chain().ok


def test_a_blocked_ip_is_refused_before_the_token_is_checked(alice, clock):
    for n in range(LIMIT):
        get(f"{n:02x}" * 32)
    response = get(alice.api_token)  # even a valid token, from the flooding address
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert get(alice.api_token, ip="10.0.0.8").status_code == 200  # elsewhere it works


def test_one_token_prefix_is_throttled_across_addresses(alice, clock):
    prefix = alice.api_token[:15]
    codes = [get(prefix + f"{n:049x}", ip=f"198.51.100.{n}").status_code for n in range(LIMIT + 3)]
    assert codes[:LIMIT] == [401] * LIMIT and set(codes[LIMIT:]) == {429}
    throttled = AuditEvent.objects.get(action="auth.throttled")
    assert throttled.detail["blocked"] == ["prefix"] and prefix not in str(throttled.detail)
    assert get("0" * 64, ip="198.51.100.200").status_code == 401  # another prefix from a new address


def test_an_ipv6_host_is_throttled_by_its_64(db, clock):
    codes = [get(f"{n:02x}" * 32, ip=f"2001:db8:1:2::{n + 1:x}").status_code for n in range(LIMIT + 2)]
    assert set(codes[LIMIT:]) == {429}
    assert get("f" * 64, ip="2001:db8:1:3::1").status_code == 401


def test_admin_password_login_is_throttled(client, django_user_model, clock):
    django_user_model.objects.create_superuser("boss", password="right-password")
    for _ in range(LIMIT):
        assert client.post("/admin/login/", {"username": "boss", "password": "wrong"}).status_code == 200
    response = client.post("/admin/login/", {"username": "boss", "password": "right-password"})
    assert response.status_code == 200 and "_auth_user_id" not in client.session  # refused while blocked
    assert b"Too many failed logins" in response.content
    assert [e.action for e in failures()] == ["auth.login_failed", "auth.throttled"]
    assert failures()[0].detail == {"username": "boss", "via": "password"}
    clock.now += 60
    assert client.post("/admin/login/", {"username": "boss", "password": "right-password"}).status_code == 302


def test_a_mistyped_password_is_never_stored_as_a_username(client, django_user_model, clock):
    django_user_model.objects.create_user("bob", password="pw")
    client.post("/admin/login/", {"username": "Tr0ub4dor&3 horse", "password": "x"})
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.detail == {"username": None, "via": "password", "unknown_username": True}
    assert "Tr0ub4dor" not in str(event.detail)


@override_settings(MEDASSIST_TRUSTED_PROXIES=[])
def test_throttle_keys_hold_no_token_or_username():
    attempt = guard.Attempt.for_token(ip="10.0.0.1", token=b"abcdef0123456789" * 4)
    assert "abcdef0123" not in str(attempt.keys)
    assert "alice" not in str(guard.Attempt.for_password(ip=None, username="alice").keys)
