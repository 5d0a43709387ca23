"""Issue 13, audit item 3: the chain is an HMAC keyed from the environment, so someone who can rewrite
audit rows (and so recompute a plain SHA-256 chain) cannot make a forged chain verify."""
import hashlib
import json

import pytest
from django.core.management import call_command

from medassist.audit.models import AuditEvent
from medassist.audit.services import audit_record, audit_verify_chain, check_audit_key
from tests.conftest import tamper_with_audit_table

KEY = "k" * 64


def forge(event_id: int, detail: dict) -> None:
    """What an attacker with write access does: change a row, then recompute every hash from it on with
    the public algorithm (SHA-256 over prev_hash + canonical form)."""
    tamper_with_audit_table("UPDATE audit_auditevent SET detail = %s WHERE id = %s", [json.dumps(detail), event_id])
    prev = AuditEvent.objects.filter(pk__lt=event_id).order_by("-id").values_list("hash", flat=True).first() or "0" * 64
    for event in AuditEvent.objects.filter(pk__gte=event_id).order_by("id"):
        digest = hashlib.sha256((prev + event.canonical()).encode("utf-8")).hexdigest()
        tamper_with_audit_table("UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                                [prev, digest, event.pk])
        prev = digest


def events(n):
    return [audit_record(action="job.view", object_id=str(i), detail={"n": i}) for i in range(n)]


def test_an_unkeyed_chain_can_be_rewritten_undetected(db, settings):
    """Why the key: without it (hash version 2) a recomputed forgery verifies."""
    settings.MEDASSIST_AUDIT_HMAC_KEY = ""
    written = events(3)
    forge(written[1].pk, {"n": 99})
    assert audit_verify_chain().ok


def test_a_keyed_chain_rewritten_without_the_key_is_detected(db, settings, capsys):
    settings.MEDASSIST_AUDIT_HMAC_KEY = KEY
    written = events(3)
    assert {e.hash_version for e in written} == {3}
    assert audit_verify_chain().ok
    forge(written[1].pk, {"n": 99})
    report = audit_verify_chain()
    assert not report.ok and [b.id for b in report.broken] == [written[1].pk, written[2].pk]
    with pytest.raises(SystemExit):
        call_command("audit_verify")
    assert f"BROKEN at event {written[1].pk}" in capsys.readouterr().err


def test_keyed_events_need_the_key_to_verify_and_an_unkeyed_one_after_them_is_flagged(db, settings):
    settings.MEDASSIST_AUDIT_HMAC_KEY = ""
    old = events(1)  # written before a key was configured: still verifies
    settings.MEDASSIST_AUDIT_HMAC_KEY = KEY
    keyed = events(1)
    settings.MEDASSIST_AUDIT_HMAC_KEY = ""
    downgraded = events(1)  # e.g. written by a process started without the key
    settings.MEDASSIST_AUDIT_HMAC_KEY = KEY
    report = audit_verify_chain()
    assert [b.id for b in report.broken] == [downgraded[0].pk] and "not HMAC-keyed" in report.broken[0].reason
    settings.MEDASSIST_AUDIT_HMAC_KEY = ""
    report = audit_verify_chain()
    assert [b.id for b in report.broken][:1] == [keyed[0].pk] and "MEDASSIST_AUDIT_HMAC_KEY" in report.broken[0].reason
    assert old[0].pk not in [b.id for b in report.broken]


def test_deploy_check_requires_a_long_key(settings):
    settings.MEDASSIST_AUDIT_HMAC_KEY = ""
    assert [e.id for e in check_audit_key()] == ["audit.E002"]
    settings.MEDASSIST_AUDIT_HMAC_KEY = "short"
    assert [e.id for e in check_audit_key()] == ["audit.E002"]
    settings.MEDASSIST_AUDIT_HMAC_KEY = KEY
    assert check_audit_key() == []
