"""Issue 13, audit trail item 1: nobody can break the hash chain from outside (run on SQLite and Postgres).

A crafted X-Forwarded-For with a bad token must get a 401, be recorded with the real peer address,
and leave the chain verifiable; whatever a caller puts in an event (-0.0, 1e309, NaN, IPv6 forms,
Unicode, NUL characters) is hashed exactly as the database stores it; chains written by the old
code still verify; and verification lists every broken event, not only the first.
"""
import hashlib
import json

import pytest
from django.core.management import call_command
from django.test import RequestFactory, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from medassist.audit.models import AuditEvent
from medassist.audit.services import GENESIS_HASH, audit_record, audit_verify_chain, client_ip
from tests.conftest import tamper_with_audit_table

CRAFTED = ["1.2.3.4/32", "junk", "1.2.3.4, junk", "::ffff:1.2.3.4", "0:0:0:0:0:0:0:1", "fe80::1%eth0",
           "1.2.3.4\x00", "२.३.४.५", "' OR 1=1 --"]


_tamper = tamper_with_audit_table


@pytest.mark.parametrize("forwarded", CRAFTED)
def test_bad_token_with_crafted_forwarded_for_is_refused_recorded_and_chain_stays_intact(db, forwarded):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    response = client.get("/api/v1/jobs/", HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR="10.0.0.7")
    assert response.status_code in (401, 403)
    failed = AuditEvent.objects.get(action="auth.login_failed")  # recorded (before the fix: a 500 on Postgres)
    report = audit_verify_chain()
    assert report.ok, report  # before the fix, on Postgres: broken at this event ("1.2.3.4/32")
    assert failed.ip == "10.0.0.7"  # no trusted proxy configured: the header is ignored


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    rf = RequestFactory()

    def ip(forwarded, remote="10.0.0.7"):
        return client_ip(rf.get("/", HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR=remote))

    with override_settings(MEDASSIST_TRUSTED_PROXIES=[]):
        assert ip("1.2.3.4") == "10.0.0.7"
    with override_settings(MEDASSIST_TRUSTED_PROXIES=["10.0.0.0/8", "::1"]):
        assert ip("1.2.3.4") == "1.2.3.4"
        assert ip("6.6.6.6, 1.2.3.4, 10.0.0.3") == "1.2.3.4"  # spoofed left-most hop is not believed
        assert ip("1.2.3.4/32") == "10.0.0.7" and ip("junk") == "10.0.0.7" and ip("1.2.3.4, junk") == "10.0.0.7"
        assert ip("0:0:0:0:0:0:0:2") == "::2"  # normalised
        assert ip("1.2.3.4", remote="192.0.2.1") == "192.0.2.1"  # peer is not a trusted proxy
        assert ip("1.2.3.4", remote="::1") == "1.2.3.4"
    assert client_ip(rf.get("/", REMOTE_ADDR="not-an-ip")) is None


def test_a_trusted_proxy_forwarded_address_is_recorded(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token bad")
    with override_settings(MEDASSIST_TRUSTED_PROXIES=["10.0.0.0/8"]):
        response = client.get("/api/v1/jobs/", HTTP_X_FORWARDED_FOR="2001:DB8:0:0::1", REMOTE_ADDR="10.0.0.7")
    assert response.status_code in (401, 403)
    assert AuditEvent.objects.get(action="auth.login_failed").ip == "2001:db8::1"
    assert audit_verify_chain().ok


AWKWARD_DETAIL = {
    "neg_zero": -0.0, "inf": float("inf"), "ninf": float("-inf"), "nan": float("nan"), "huge": 1e309,
    "big_float": 1e16, "tiny": 5e-324, "third": 1 / 3, "one": 1.0, "big_int": 2**70, "bool": True,
    "unicode": "π ≠ 3 — 😀 e\u0301 é", "nul": "a\x00b", "surrogate": "x\ud800y", "nested": {"\x00k": [-0.0, (1, 2)]},
    1: "int key", "list": [1e309, None, "\x00"],
}


@pytest.mark.parametrize("ip", ["1.2.3.4/32", "junk", "::ffff:1.2.3.4", "0:0:0:0:0:0:0:1", "2001:DB8::1",
                                "fe80::1%eth0", None])
def test_awkward_values_are_stored_as_hashed(db, ip):
    event = audit_record(action="job.view", object_type="jobs.job\x00", object_id="x" * 100, ip=ip,
                         detail=AWKWARD_DETAIL, model_version="m\x00")
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.hash_version in (2, 3)  # 3: HMAC-keyed, when MEDASSIST_AUDIT_HMAC_KEY is set
    assert stored.detail["nul"] == "a\ufffdb" and stored.detail["inf"] == "Infinity" and stored.detail["nan"] == "NaN"
    assert stored.detail["unicode"] == AWKWARD_DETAIL["unicode"] and stored.detail["1"] == "int key"
    # SQLite gives back the normalised string; Postgres' inet writes an IPv4-mapped address its own way.
    expected = {"::ffff:1.2.3.4": {"::ffff:102:304", "::ffff:1.2.3.4"}, "0:0:0:0:0:0:0:1": {"::1"},
                "2001:DB8::1": {"2001:db8::1"}}.get(ip, {None})
    assert stored.ip in expected
    audit_record(action="job.view", detail={"after": True})
    report = audit_verify_chain()
    assert report.ok and report.checked == 2, report


def test_old_version_1_chains_still_verify(db):
    """Events written by the old code (hash over canonical_json) verify the old way; new events follow."""
    prev = GENESIS_HASH
    for n in range(2):
        old = AuditEvent(created_at=timezone.now(), action="job.view", object_type="jobs.job", object_id=str(n),
                         ip="127.0.0.1", detail={"n": n, "note": "π"}, prev_hash=prev, hash_version=1)
        old.hash = hashlib.sha256((prev + old.canonical_json()).encode("utf-8")).hexdigest()
        old.save(force_insert=True)
        prev = old.hash
    new = audit_record(action="job.view", detail={"n": 2})
    assert new.prev_hash == prev and new.hash_version in (2, 3)
    assert audit_verify_chain().ok and audit_verify_chain().checked == 3


def test_verification_reports_every_broken_event_and_checks_on(db, capsys):
    events = [audit_record(action="job.view", object_id=str(i), detail={"n": i}) for i in range(6)]
    _tamper("UPDATE audit_auditevent SET detail = %s WHERE id = %s", [json.dumps({"n": 99}), events[1].pk])
    _tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[3].pk])
    _tamper("UPDATE audit_auditevent SET object_id = %s WHERE id = %s", ["forged", events[5].pk])
    report = audit_verify_chain()
    assert not report.ok and report.checked == 5 and report.broken_count == 3
    assert [b.id for b in report.broken] == [events[1].pk, events[4].pk, events[5].pk]
    assert "altered" in report.broken[0].reason and "removed" in report.broken[1].reason
    assert report.broken_id == events[1].pk
    with pytest.raises(SystemExit):
        call_command("audit_verify")
    err = capsys.readouterr().err
    for event in (events[1], events[4], events[5]):
        assert f"BROKEN at event {event.pk}" in err
    assert "3 of 5 events" in err


def test_a_misconfigured_trusted_proxy_list_fails_the_system_check():
    from medassist.audit.services import check_trusted_proxies

    with override_settings(MEDASSIST_TRUSTED_PROXIES=["10.0.0.0/8", "proxy.example"]):
        errors = check_trusted_proxies()
    assert [e.id for e in errors] == ["audit.E001"]
    with override_settings(MEDASSIST_TRUSTED_PROXIES=["10.0.0.0/8", "::1", "192.168.1.1/24"]):
        assert check_trusted_proxies() == []


def test_unprintable_and_deep_details_are_still_recorded(db):
    deep = current = {}
    for _ in range(50):
        current["d"] = {}
        current = current["d"]
    audit_record(action="job.view", detail={"deep": deep, "int": 10**5000})
    assert audit_verify_chain().ok
