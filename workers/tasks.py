"""Celery tasks: a thin interface over ``medassist.jobs.services``.

Tasks carry ids only (job id and an index range), never payloads. ``acks_late`` plus idempotent
chunk processing make a redelivered chunk harmless. Transient database or broker errors are
retried with backoff; anything else, and a chunk that runs out of time, fails that chunk's
unfinished items with a message the user can read, so a job never hangs in ``running``.
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
    runtime = get_runtime()
    for kind in KINDS.values():
        if _consumed_queues is None or kind.queue in _consumed_queues:
            runtime.ensure_kind_loaded(kind)
    runtime.warm()


@shared_task(
    bind=True,
    name="medassist.process_chunk",
    acks_late=True,
    max_retries=5,
    soft_time_limit=settings.MEDASSIST_CHUNK_SOFT_TIME_LIMIT,
    time_limit=settings.MEDASSIST_CHUNK_TIME_LIMIT,
)
def process_chunk(self, job_id: str, start: int, end: int) -> dict:
    started = time.perf_counter()
    try:
        try:
            report = job_process_chunk(job_id=job_id, start=start, end=end, runtime=get_runtime())
        finally:
            release_freed_memory()  # a chunk's batch buffers, freed, stay resident otherwise
    except SoftTimeLimitExceeded:
        limit = settings.MEDASSIST_CHUNK_SOFT_TIME_LIMIT
        failed = job_fail_chunk(job_id=job_id, start=start, end=end,
                                reason=f"processing took longer than the {limit} s limit per chunk")
        log.warning("chunk timed out", extra={"job": job_id, "start": start, "end": end, "failed": failed})
        return {"failed": failed, "timed_out": True}
    except TRANSIENT_ERRORS as exc:
        close_old_connections()
        if self.request.retries >= self.max_retries:
            log.error("chunk gave up after retries", extra={"job": job_id, "start": start, "error": type(exc).__name__})
            job_fail_chunk(job_id=job_id, start=start, end=end,
                           reason=f"the worker could not reach the database or broker ({type(exc).__name__})")
            return {"gave_up": True}
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 30))  # noqa: B904 (Celery idiom)
    except Exception as exc:
        # A worker-side failure (e.g. no active model version): fail the items, keep the worker alive.
        log.exception("chunk failed", extra={"job": job_id, "start": start, "end": end})
        failed = job_fail_chunk(job_id=job_id, start=start, end=end, reason=f"worker error: {exc}"[:2000])
        return {"failed": failed, "error": type(exc).__name__}
    metrics.observe_chunk(seconds=time.perf_counter() - started, processed=report.processed)
    return {"processed": report.processed, "failed": report.failed, "skipped": report.skipped}
