"""Chunk rows and reconciliation in-process (issue 12): what a dead delivery, a lost message or a broker
outage at submit leaves behind is found from the database and finished, exactly once.

The broker here is the real embedded one, except where a test makes it fail on purpose (a send that
raises, as kombu does when Redis is down). Crashes through real worker processes: tests/integration/test_faults.py.
"""
import threading
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from config.celery import app
from medassist.jobs.models import Job, JobChunk, JobItem
from medassist.jobs.reconcile import jobs_reconcile
from medassist.jobs.services import job_process_chunk, job_submit, job_validate
from workers.versions import get_runtime

TEXTS = [f"Abstract {i}: aspirin after myocardial infarction lowered recurrent events." for i in range(10)]


@pytest.fixture
def sent(monkeypatch):
    """The chunks handed to the broker, as (job id, start, end); a short pause widens any race."""
    calls = []

    def send_task(name, args=None, **kwargs):
        time.sleep(0.01)
        calls.append(tuple(args))

    monkeypatch.setattr(app, "send_task", send_task)
    return calls


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root-faults", password="pw")


def make_job(user, *, chunk_size=4, params=None):
    with override_settings(MEDASSIST_CHUNK_SIZE=chunk_size, MEDASSIST_FAULT_INJECTION=True):
        submission = job_validate(user=user, kind_name="noop", items=TEXTS, params=params or {})
        job, _ = job_submit(owner=user, submission=submission)
    return job


def age(job, seconds=3600):
    """Make the job and its chunks look as if their last sign of life was ``seconds`` ago."""
    then = timezone.now() - timedelta(seconds=seconds)
    Job.objects.filter(pk=job.pk).update(created_at=then)
    JobChunk.objects.filter(job=job, enqueued_at__isnull=False).update(enqueued_at=then)
    JobChunk.objects.filter(job=job, state="running").update(heartbeat_at=then, started_at=then - timedelta(seconds=5))


def test_submit_stores_one_chunk_per_range_and_sends_each_once(transactional_db, root, sent):
    job = make_job(root)
    assert list(job.chunks.values_list("start", "end", "state")) == [(0, 4, "queued"), (4, 8, "queued"),
                                                                    (8, 10, "queued")]
    assert sorted(sent) == [(str(job.pk), 0, 4), (str(job.pk), 4, 8), (str(job.pk), 8, 10)]
    assert jobs_reconcile().sent == 0  # all live: nothing to do


def test_a_dead_delivery_is_resent_then_given_up_after_the_delivery_cap(transactional_db, root, sent):
    job = make_job(root)
    sent.clear()
    for delivery in (1, 2, 3):
        # A delivery claims the first chunk and dies (its pool child was killed): no results, no heartbeat.
        JobChunk.objects.filter(job=job, start=0).update(state="running", deliveries=delivery,
                                                         started_at=timezone.now(), heartbeat_at=timezone.now())
        assert jobs_reconcile().sent == 0  # still heartbeating a moment ago: alive
        then = timezone.now() - timedelta(seconds=3600)
        JobChunk.objects.filter(job=job, start=0).update(started_at=then, heartbeat_at=then + timedelta(seconds=1))
        report = jobs_reconcile()
        if delivery < 3:
            assert (report.sent, report.failed_chunks) == (1, 0) and sent[-1] == (str(job.pk), 0, 4)
            assert JobChunk.objects.get(job=job, start=0).state == "queued"
    assert (report.sent, report.failed_chunks, report.failed_items) == (0, 1, 4)
    failed = JobItem.objects.filter(job=job, status="failed")
    assert set(failed.values_list("index", flat=True)) == {0, 1, 2, 3}
    assert set(failed.values_list("error", flat=True)) == {"worker process died 3 times while processing this chunk"}
    # The rest still runs and the job ends partially failed, not looping.
    for start, end in ((4, 8), (8, 10)):
        job_process_chunk(job_id=job.pk, start=start, end=end, runtime=get_runtime())
    job.refresh_from_db()
    assert (job.status, job.succeeded_items, job.failed_items) == ("partially_failed", 6, 4)
    assert set(JobItem.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


def test_a_delivery_killed_at_its_hard_time_limit_fails_its_items_at_once(transactional_db, root, sent):
    job = make_job(root)
    chunk = JobChunk.objects.get(job=job, start=4)
    long_ago = timezone.now() - timedelta(seconds=chunk.time_limit + 600)
    JobChunk.objects.filter(pk=chunk.pk).update(state="running", deliveries=1, started_at=long_ago,
                                                heartbeat_at=long_ago + timedelta(seconds=chunk.time_limit - 5))
    report = jobs_reconcile()
    assert (report.failed_chunks, report.failed_items) == (1, 4)
    errors = set(JobItem.objects.filter(job=job, index__gte=4, index__lt=8).values_list("error", flat=True))
    assert errors == {f"processing took longer than the {chunk.time_limit} s hard time limit per chunk; "
                      "the worker stopped it"}


def test_a_redelivered_copy_of_a_chunk_that_ran_into_its_hard_limit_fails_it_instead_of_running_it(
        transactional_db, root, sent):
    """Redis hands the message out again (visibility timeout, or a killed pool child) before reconcile
    gets there: that copy gives the same reason reconcile would, and does not hang on the item again."""
    job = make_job(root)
    chunk = JobChunk.objects.get(job=job, start=4)
    long_ago = timezone.now() - timedelta(seconds=chunk.time_limit + 600)
    JobChunk.objects.filter(pk=chunk.pk).update(state="running", deliveries=1, started_at=long_ago,
                                                heartbeat_at=long_ago + timedelta(seconds=chunk.time_limit - 5))
    copy = job_process_chunk(job_id=job.pk, start=4, end=8, runtime=get_runtime())
    reason = f"processing took longer than the {chunk.time_limit} s hard time limit per chunk; the worker stopped it"
    assert (copy.succeeded, copy.failed) == (0, 4)
    assert set(JobItem.objects.filter(job=job, index__gte=4, index__lt=8).values_list("error", flat=True)) == {reason}
    assert JobChunk.objects.get(pk=chunk.pk).state == "done"
    assert jobs_reconcile().failed_chunks == 0  # nothing left for reconcile: not failed twice


def _hang_under_the_watchdog(chunk, result):
    """A pool child's delivery that never returns (the fault suite's hang): only the watchdog ends it.
    (This forked child never touches the parent's database connection: the heartbeat thread opens its own.)"""
    import os

    from medassist.jobs.services import _Heartbeat

    with _Heartbeat(chunk, kill_on_overrun=True):
        time.sleep(60)
    os.write(result, b"returned")  # never reached


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_delivery_that_outlives_its_hard_limit_kills_its_own_process(transactional_db, root, sent):
    """The hard limit's second line: if Celery's pool timer does not stop a delivery, its heartbeat
    watchdog does, MEDASSIST_HARD_LIMIT_GRACE past the limit (SIGKILL, as the pool would)."""
    import multiprocessing
    import os
    import signal

    job = make_job(root)
    JobChunk.objects.filter(job=job, start=0).update(state="running", time_limit=1, started_at=timezone.now(),
                                                     heartbeat_at=timezone.now())
    chunk = JobChunk.objects.get(job=job, start=0)
    read, write = os.pipe()
    with override_settings(MEDASSIST_HARD_LIMIT_GRACE=0.5, MEDASSIST_HEARTBEAT_INTERVAL=0.1):
        child = multiprocessing.get_context("fork").Process(target=_hang_under_the_watchdog, args=(chunk, write))
        started = time.monotonic()
        child.start()
        child.join(timeout=20)
    os.close(write)
    assert child.exitcode == -signal.SIGKILL, child.exitcode
    assert 1.5 <= time.monotonic() - started < 15
    assert os.read(read, 100) == b""
    os.close(read)


def test_a_copy_of_a_finished_or_running_chunk_is_dropped_and_not_counted(transactional_db, root, sent):
    job = make_job(root)
    first = job_process_chunk(job_id=job.pk, start=0, end=4, runtime=get_runtime())
    again = job_process_chunk(job_id=job.pk, start=0, end=4, runtime=get_runtime())
    assert (first.succeeded, again.processed, again.skipped) == (4, 0, "chunk already done")
    JobChunk.objects.filter(job=job, start=4).update(state="running", heartbeat_at=timezone.now())
    with override_settings(MEDASSIST_HEARTBEAT_TIMEOUT=45):
        copy = job_process_chunk(job_id=job.pk, start=4, end=8, runtime=get_runtime())
    # Not dropped for good: it looks again once that delivery's heartbeat would be stale.
    assert copy.skipped == "another delivery of this chunk is running" and 40 < copy.retry_in <= 46
    assert first.retry_in is None and again.retry_in is None
    assert JobChunk.objects.get(job=job, start=0).deliveries == 1
    assert Job.objects.get(pk=job.pk).succeeded_items == 4


def test_the_delivery_after_the_cap_fails_the_items_instead_of_running_them(transactional_db, root, sent):
    job = make_job(root)
    JobChunk.objects.filter(job=job, start=8).update(deliveries=3)  # three deliveries died before
    report = job_process_chunk(job_id=job.pk, start=8, end=10, runtime=get_runtime())
    assert (report.failed, report.skipped) == (2, "gave up: worker process died 3 times while processing this chunk")
    assert JobChunk.objects.get(job=job, start=8).state == "done"


def test_two_reconcilers_at_once_send_each_lost_chunk_exactly_once(transactional_db, root, sent):
    jobs = [make_job(root, chunk_size=1) for _ in range(3)]  # 30 chunks
    JobChunk.objects.update(state="pending", enqueued_at=None)  # every message lost
    for job in jobs:
        age(job)
    sent.clear()
    reports = []

    def one_pass():
        try:
            reports.append(jobs_reconcile())
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 2 and sum(r.sent for r in reports) == 30
    assert len(sent) == len(set(sent)) == 30
    assert set(JobChunk.objects.values_list("state", flat=True)) == {"queued"}


def test_reconcile_finalises_a_job_whose_last_chunk_stored_but_never_finalised(transactional_db, root, sent):
    job = make_job(root, chunk_size=10)
    JobItem.objects.filter(job=job).update(status="succeeded", attempts=1)
    Job.objects.filter(pk=job.pk).update(succeeded_items=10, status="running")
    assert jobs_reconcile().finalised == 1
    assert Job.objects.get(pk=job.pk).status == "succeeded"
    assert jobs_reconcile().finalised == 0


def test_broker_down_at_submit_answers_503_then_the_idempotent_retry_gets_the_job_and_runs_it(
        transactional_db, root, client_for, monkeypatch, sent):
    from rest_framework.test import APIClient

    def broker_down(*args, **kwargs):
        raise BrokerOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(app, "send_task", broker_down)
    api = APIClient()
    api.force_authenticate(root)
    body = {"kind": "noop", "items": TEXTS}
    response = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="batch-7")
    assert response.status_code == 503 and response["Retry-After"] == "30"
    job = Job.objects.get()
    assert response.json()["id"] == str(job.pk) and job.status == "queued"
    assert set(job.chunks.values_list("state", flat=True)) == {"pending"}
    assert response.json()["detail"].startswith("The job queue is unreachable.")

    again = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="batch-7")
    assert again.status_code == 503  # still down: the same job, still waiting
    monkeypatch.undo()
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append(tuple(args)))
    replay = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="batch-7")
    assert replay.status_code == 200 and replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == str(job.pk) and Job.objects.count() == 1
    assert len(sent) == 1 and set(job.chunks.values_list("state", flat=True)) == {"queued"}


def test_an_outage_longer_than_the_window_fails_the_items_saying_so(transactional_db, root, monkeypatch, sent):
    from django.db import OperationalError

    from workers import tasks

    job = make_job(root)

    def database_down(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(tasks, "job_process_chunk", database_down)
    with override_settings(MEDASSIST_DB_OUTAGE_WINDOW=600):
        result = tasks.process_chunk.apply(args=[str(job.pk), 0, 4], kwargs={"outage_since": time.time() - 601})
    assert result.get() == {"gave_up": True}
    errors = set(JobItem.objects.filter(job=job, index__lt=4).values_list("error", flat=True))
    assert errors == {"the worker could not reach the database or broker for 600 s (OperationalError); "
                      "the chunk was not processed"}
    assert JobItem.objects.filter(job=job, status="pending").count() == 6  # the other chunks are untouched


def test_fault_injection_is_refused_where_it_is_off(root):
    from medassist.jobs.services import SubmissionInvalid

    with pytest.raises(SubmissionInvalid) as refused:
        job_validate(user=root, kind_name="noop", items=TEXTS, params={"fault": {"kill_marker": "x"}})
    assert refused.value.errors == {"params.fault": ["fault injection is off on this server (MEDASSIST_FAULT_INJECTION)"]}
    assert Job.objects.count() == 0


def test_a_result_write_waits_for_the_job_lock_before_locking_items(transactional_db, root, sent):
    """One lock order (the job row, then its items), as job_cancel takes them: a write racing a cancel
    never holds item locks the cancel waits for, so the two cannot deadlock."""
    from django.db import DatabaseError, connection, transaction

    from medassist.jobs.services import job_fail_chunk
    from tests.conftest import require, using_postgres

    require(using_postgres(), "row locks need Postgres (set DATABASE_URL)")
    job = make_job(root)
    job_locked, try_items, done = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def cancel_like():  # what job_cancel does first: lock the job row; then it wants the items
        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(pk=job.pk)
                job_locked.set()
                try_items.wait(10)
                try:
                    seen["items"] = len(list(JobItem.objects.select_for_update(nowait=True).filter(job=job)))
                except DatabaseError as exc:
                    seen["items"] = f"locked by the writer: {exc}"
        finally:
            connection.close()

    def writer():
        try:
            seen["failed"] = job_fail_chunk(job_id=job.pk, start=0, end=4, reason="worker error: test")
        finally:
            connection.close()
            done.set()

    canceller = threading.Thread(target=cancel_like)
    canceller.start()
    assert job_locked.wait(10)
    write = threading.Thread(target=writer)
    write.start()
    time.sleep(1.0)  # the writer is now blocked on its first lock
    assert not done.is_set()
    try_items.set()
    canceller.join(10)
    write.join(10)
    assert seen == {"items": 10, "failed": 4}
