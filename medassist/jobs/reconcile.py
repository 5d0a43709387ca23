"""Reconciliation: the database, not the broker, decides what is left to run (issue 12).

``jobs_reconcile`` is one pass, run by ``manage.py reconcile --loop`` (compose's ``reconcile`` service):

- a chunk with no live delivery is sent again: never sent (the broker was down at submit), sent longer
  than MEDASSIST_QUEUED_TIMEOUT ago and never started (a lost message), or running without a heartbeat
  for MEDASSIST_HEARTBEAT_TIMEOUT (its worker or pool child died);
- a dead delivery that had run into its hard time limit, or the MEDASSIST_MAX_DELIVERIES-th dead one,
  fails the chunk's pending items with the reason instead (no endless redelivery);
- a job whose items are all final is finalised.

Safe to run twice at once: every change is a conditional UPDATE on the state this pass read (only one
pass wins a chunk), item results are written under the job lock and only for pending items, and
finalising is itself conditional. Works on SQLite + file-system transport and on Postgres + Redis.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from .models import Job, JobChunk
from .services import chunks_send, dead_delivery_reason, job_fail_chunk, job_finalize_if_done

log = logging.getLogger(__name__)

ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)


@dataclass
class ReconcileReport:
    sent: int = 0
    failed_chunks: int = 0
    failed_items: int = 0
    finalised: int = 0
    send_errors: int = 0

    def __bool__(self) -> bool:
        return any((self.sent, self.failed_chunks, self.finalised, self.send_errors))


def stale_chunks(now=None):
    """Chunks of unfinished jobs that have no live delivery (see the module docstring)."""
    now = now or timezone.now()
    return (JobChunk.objects.filter(job__status__in=ACTIVE)
            .filter(Q(state=JobChunk.State.PENDING, job__created_at__lt=now - timedelta(
                        seconds=settings.MEDASSIST_ENQUEUE_GRACE))
                    | Q(state=JobChunk.State.QUEUED, enqueued_at__lt=now - timedelta(
                        seconds=settings.MEDASSIST_QUEUED_TIMEOUT))
                    | Q(state=JobChunk.State.RUNNING, heartbeat_at__lt=now - timedelta(
                        seconds=settings.MEDASSIST_HEARTBEAT_TIMEOUT)))
            .select_related("job").order_by("job__created_at", "start"))


def jobs_reconcile(*, limit: int = 1000) -> ReconcileReport:
    """One reconciliation pass; returns what it did."""
    report = ReconcileReport()
    now = timezone.now()
    to_send: dict[str, list[JobChunk]] = defaultdict(list)
    for chunk in stale_chunks(now)[:limit]:
        # Claim on exactly what was read: a concurrent pass, or a delivery starting now, wins instead.
        seen = JobChunk.objects.filter(pk=chunk.pk, state=chunk.state, deliveries=chunk.deliveries,
                                       enqueued_at=chunk.enqueued_at, heartbeat_at=chunk.heartbeat_at)
        reason = dead_delivery_reason(chunk)
        if reason:
            if seen.update(state=JobChunk.State.DONE, finished_at=now):
                report.failed_chunks += 1
                report.failed_items += job_fail_chunk(job_id=chunk.job_id, start=chunk.start, end=chunk.end,
                                                      reason=reason)
                log.warning("chunk given up", extra={"job": str(chunk.job_id), "start": chunk.start, "reason": reason})
        elif seen.update(state=JobChunk.State.QUEUED, enqueued_at=now):
            to_send[chunk.job.queue].append(chunk)
    for queue, chunks in to_send.items():
        try:
            report.sent += chunks_send(chunks, queue=queue)
        except Exception as exc:  # broker down: they went back to pending; the next pass tries again
            report.send_errors += 1
            log.warning("reconcile could not reach the broker", extra={"queue": queue, "error": type(exc).__name__})
    done = Job.objects.filter(status__in=ACTIVE, total_items__lte=F("succeeded_items") + F("failed_items"))
    for job_id in done.values_list("pk", flat=True)[:limit]:
        report.finalised += job_finalize_if_done(job_id=job_id)
    if report:
        log.info("reconciled", extra=report.__dict__)
    return report
