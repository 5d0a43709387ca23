"""Celery tasks: a thin interface over ``medassist.jobs.services``.

Tasks carry ids only (job id and an index range), never payloads. ``acks_late`` plus idempotent
chunk processing (a delivery claims the chunk row first; a copy of a finished chunk is dropped, one of
a running chunk waits to see whether that delivery dies) make a redelivered chunk harmless. A
database or broker outage is retried with backoff for MEDASSIST_DB_OUTAGE_WINDOW, then the items
fail saying so; anything else, and a chunk that runs out of time, fails that chunk's
unfinished items with a message the user can read. What a task cannot record (a killed pool child,
a hard time limit, an outage that outlasts it) ``reconcile`` finds from the chunk rows, so a job
never hangs in ``running``.
"""
from __future__ import annotations

import logging
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_process_init
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from kombu.exceptions import OperationalError as BrokerOperationalError

from medassist.common import metrics
from medassist.jobs.services import job_fail_chunk, job_process_chunk
from workers.runtime.memory import release_freed_memory
from workers.versions import get_runtime

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerOperationalError)


# The queues this worker consumes (-Q), recorded in the parent before the pool forks, so that pool
# children warm only the kinds they can receive (e.g. no HPO ontology, slow to parse and large, in batch
# workers). Other kinds still load on first use (job_process_chunk).
_consumed_queues: set[str] | None = None


@celeryd_after_setup.connect
def _remember_consumed_queues(sender, instance, **kwargs):
    global _consumed_queues
    _consumed_queues = set(instance.app.amqp.queues.consume_from or ())


@worker_process_init.connect
def _load_models_in_child(**kwargs):
    """Load the resources of the kinds this worker serves once per pool child, before it takes a task."""
    import torch

    from medassist.kinds import KINDS

    close_old_connections()  # never share the parent's DB connection across fork
    torch.set_num_threads(settings.MEDASSIST_TORCH_THREADS)  # processes x threads = cores
    if not settings.MEDASSIST_WORKER_PRELOAD:
        return
    runtime = get_runtime()
    for kind in KINDS.values():
        if _consumed_queues is None or kind.queue in _consumed_queues:
            runtime.ensure_kind_loaded(kind)
    runtime.warm()


def _fail_chunk_if_reachable(*, job_id, start: int, end: int, reason: str) -> int | None:
    """Fail the chunk's pending items; None when the database is unreachable (the chunk row then stays
    ``running`` and stops heartbeating, so ``reconcile`` takes it up once the database is back)."""
    try:
        return job_fail_chunk(job_id=job_id, start=start, end=end, reason=reason)
    except TRANSIENT_ERRORS as exc:
        close_old_connections()
        log.error("could not record the chunk's failure", extra={"job": job_id, "start": start,
                                                                 "error": type(exc).__name__})
        return None


@shared_task(
    bind=True,
    name="medassist.process_chunk",
    acks_late=True,
    max_retries=None,  # transient errors retry until MEDASSIST_DB_OUTAGE_WINDOW has passed (below)
    soft_time_limit=settings.MEDASSIST_CHUNK_SOFT_TIME_LIMIT,
    time_limit=settings.MEDASSIST_CHUNK_TIME_LIMIT,
)
def process_chunk(self, job_id: str, start: int, end: int, outage_since: float | None = None) -> dict:
    started = time.perf_counter()
    try:
        try:
            report = job_process_chunk(job_id=job_id, start=start, end=end, runtime=get_runtime(),
                                       heartbeat="kill_on_overrun",
                                       resumed=outage_since is not None)
        finally:
            release_freed_memory()  # a chunk's batch buffers, freed, stay resident otherwise
    except SoftTimeLimitExceeded:
        limit = self.request.timelimit[1] if self.request.timelimit and self.request.timelimit[1] else \
            settings.MEDASSIST_CHUNK_SOFT_TIME_LIMIT
        failed = _fail_chunk_if_reachable(job_id=job_id, start=start, end=end,
                                          reason=f"processing took longer than the {limit:g} s limit per chunk")
        log.warning("chunk timed out", extra={"job": job_id, "start": start, "end": end, "failed": failed})
        return {"failed": failed, "timed_out": True}
    except TRANSIENT_ERRORS as exc:
        # The database (or broker) is unreachable: wait it out. retry() sends this chunk again with a
        # countdown before this delivery is acknowledged, so the work is never without a message.
        close_old_connections()
        since = outage_since or time.time()
        window = settings.MEDASSIST_DB_OUTAGE_WINDOW
        if time.time() - since >= window:
            log.error("chunk gave up after an outage", extra={"job": job_id, "start": start,
                                                              "error": type(exc).__name__})
            _fail_chunk_if_reachable(
                job_id=job_id, start=start, end=end,
                reason=f"the worker could not reach the database or broker for {window:g} s "
                       f"({type(exc).__name__}); the chunk was not processed")
            return {"gave_up": True}
        countdown = min(2 ** self.request.retries, 30)
        log.warning("chunk waits out an outage", extra={"job": job_id, "start": start, "retry_in": countdown,
                                                        "error": type(exc).__name__})
        raise self.retry(exc=exc, countdown=countdown, kwargs={"outage_since": since})  # noqa: B904 (Celery idiom)
    except Exception as exc:
        # A worker-side failure (e.g. no active model version): fail the items, keep the worker alive.
        log.exception("chunk failed", extra={"job": job_id, "start": start, "end": end})
        failed = _fail_chunk_if_reachable(job_id=job_id, start=start, end=end, reason=f"worker error: {exc}"[:2000])
        return {"failed": failed, "error": type(exc).__name__}
    if report.retry_in is not None:
        # A copy of a chunk that another delivery is running (e.g. Redis redelivered it): it comes back
        # once that delivery's heartbeat would be stale, and takes over only if it has died.
        raise self.retry(countdown=report.retry_in)
    metrics.observe_chunk(seconds=time.perf_counter() - started, processed=report.processed)
    return {"processed": report.processed, "failed": report.failed, "skipped": report.skipped}
