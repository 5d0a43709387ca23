"""The fault-injection suite (issue 12): real worker and reconcile processes, real abstracts, one fault each.

Every scenario (medassist/tools/faults.py, also measured by ``manage.py bench_faults``) submits 2,104
MEDLINE abstracts, injects its fault mid-job and must end with every item succeeded, or failed with a
reason; none stored or counted twice; the audit chain intact. Redis and Postgres scenarios stop and
start the real services (restored in a ``finally``); they need CELERY_BROKER_URL / DATABASE_URL
pointing at them (skipped on a laptop, failing under CI=true).
"""
import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from medassist.tools import faults
from tests.conftest import ROOT, require, require_shared_data

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def root(transactional_db, django_user_model):
    require_shared_data("medline-sample", "medline16n0902.xml.gz")
    return django_user_model.objects.create_superuser("faults-root", password="pw")


@pytest.fixture
def lab(transactional_db):
    with faults.Lab() as lab:  # logs under MEDASSIST_VAR_DIR/faults/
        yield lab


def assert_recovered(outcome, capsys, *, failed: int = 0, reason: str = ""):
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome.row()
    assert outcome.failed_without_reason == 0
    assert outcome.succeeded + outcome.failed + outcome.cancelled == outcome.total >= 2000
    assert outcome.failed == failed, outcome.reasons
    if reason:
        assert set(outcome.reasons) == {reason}
    call_command("audit_verify")
    assert "audit chain OK" in capsys.readouterr().out


def test_sigkill_of_the_worker_group_mid_job(lab, root, capsys):
    outcome = faults.sigkill_worker(lab, root)
    assert outcome.statuses == ["succeeded"]
    assert_recovered(outcome, capsys)


def test_sigkill_on_the_file_system_transport(tmp_path):
    """The embedded default's transport loses fetched messages on a kill: reconcile finds them."""
    if not faults.using_redis():
        pytest.skip("the test above ran on the file-system transport")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(CELERY_BROKER_URL="filesystem://", MEDASSIST_VAR_DIR=str(tmp_path / "var"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/integration/test_faults.py::test_sigkill_of_the_worker_group_mid_job"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout


def test_redis_shutdown_nosave_mid_job(lab, root, capsys):
    require(faults.services_available()["redis"], "needs Redis (CELERY_BROKER_URL) and its commands on this machine")
    outcome = faults.redis_shutdown(lab, root)
    assert outcome.statuses == ["succeeded"]
    assert_recovered(outcome, capsys)


def test_postgres_restart_while_chunks_store(lab, root, capsys):
    require(faults.services_available()["postgres"], "needs Postgres (DATABASE_URL) and pg_ctlcluster on this machine")
    outcome = faults.postgres_restart_mid_job(lab, root)
    assert outcome.statuses == ["succeeded"]
    assert_recovered(outcome, capsys)


def test_a_chunk_past_its_hard_time_limit_fails_its_items_with_the_reason(lab, root, capsys):
    outcome = faults.hard_time_limit(lab, root)
    assert outcome.statuses == ["partially_failed"]
    assert_recovered(outcome, capsys, failed=faults.CHUNK_SIZE,
                     reason="processing took longer than the 10 s hard time limit per chunk; the worker stopped it")


def test_a_hang_where_the_pool_enforces_no_time_limit_is_stopped_by_the_delivery_watchdog(lab, root, capsys):
    outcome = faults.hang_without_pool_timer(lab, root)
    assert outcome.statuses == ["partially_failed"]
    assert any("hang-solo exited (-9)" in note for note in outcome.notes), outcome.notes
    assert_recovered(outcome, capsys, failed=faults.CHUNK_SIZE,
                     reason="processing took longer than the 10 s hard time limit per chunk; the worker stopped it")


def test_an_item_that_kills_its_pool_child_fails_its_chunk_after_three_deliveries(lab, root, capsys):
    outcome = faults.poison_item(lab, root)
    assert outcome.statuses == ["partially_failed"]
    assert_recovered(outcome, capsys, failed=faults.CHUNK_SIZE,
                     reason="worker process died 3 times while processing this chunk")


def test_broker_stopped_during_submission(lab, root, capsys):
    require(faults.services_available()["redis"], "needs Redis (CELERY_BROKER_URL) and its commands on this machine")
    outcome = faults.broker_down_at_submit(lab, root)
    assert outcome.notes[0] == "submit while down: 503, Retry-After 30"
    assert outcome.statuses == ["succeeded"]
    assert_recovered(outcome, capsys)


def test_cancel_in_a_loop_while_results_are_written(lab, root, capsys):
    outcome = faults.cancel_race(lab, root)
    assert set(outcome.answers) <= {200, 409} and outcome.answers[200] == 5, outcome.answers
    assert outcome.deadlocks == 0
    assert set(outcome.statuses) == {"cancelled"} and outcome.cancelled > 0
    assert_recovered(outcome, capsys)
