"""Issue 13, audit trail item 3 (part): tail deletion and TRUNCATE are noticed through an anchor kept
outside the database (`audit_anchor` writes the head, `audit_verify --anchor` checks it)."""
import json

import pytest
from django.core.management import call_command

from medassist.audit.services import audit_record, audit_verify_chain
from tests.conftest import tamper_with_audit_table, using_postgres


def events(n, start=0):
    return [audit_record(action="job.view", object_id=str(i), detail={"n": i}) for i in range(start, start + n)]


_raw = tamper_with_audit_table


def verify(anchor, capsys):
    try:
        call_command("audit_verify", "--anchor", str(anchor))
    except SystemExit as exc:
        assert exc.code == 1
        return False, capsys.readouterr().err
    return True, capsys.readouterr().out


def test_anchor_agrees_with_a_growing_chain(db, tmp_path, capsys):
    anchor = tmp_path / "anchor.jsonl"
    call_command("audit_anchor", "--anchor", str(anchor))  # an empty chain
    written = events(3)
    call_command("audit_anchor", "--anchor", str(anchor))
    head = json.loads(anchor.read_text().splitlines()[-1])
    assert head["id"] == written[-1].pk and head["hash"] == written[-1].hash and head["count"] == 3
    events(2, start=3)
    ok, out = verify(anchor, capsys)
    assert ok and "consistent with the anchors" in out


def test_deleting_the_newest_events_is_noticed(db, tmp_path, capsys):
    anchor = tmp_path / "anchor.jsonl"
    written = events(3)
    call_command("audit_anchor", "--anchor", str(anchor))
    _raw("DELETE FROM audit_auditevent WHERE id = %s", [written[-1].pk])
    assert audit_verify_chain().ok  # the chain alone cannot see it
    ok, err = verify(anchor, capsys)
    assert not ok and f"event {written[-1].pk} (head when anchored) is missing" in err


@pytest.mark.parametrize("restart_ids", [False, True])
def test_emptying_the_table_and_writing_anew_is_noticed(db, tmp_path, capsys, restart_ids):
    anchor = tmp_path / "anchor.jsonl"
    events(3)
    call_command("audit_anchor", "--anchor", str(anchor))
    if using_postgres():
        _raw("TRUNCATE audit_auditevent" + (" RESTART IDENTITY" if restart_ids else ""))
    else:
        _raw("DELETE FROM audit_auditevent")
        if restart_ids:
            _raw("DELETE FROM sqlite_sequence WHERE name = 'audit_auditevent'")
    events(4, start=10)
    assert audit_verify_chain().ok
    ok, err = verify(anchor, capsys)
    assert not ok and "MISMATCH" in err


def test_a_missing_anchor_file_fails_verification(db, tmp_path, capsys):
    events(1)
    ok, err = verify(tmp_path / "nowhere.jsonl", capsys)
    assert not ok and "does not exist" in err
