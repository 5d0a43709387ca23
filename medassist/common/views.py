"""Operational endpoints: ``/health/`` (database, broker, workers) and ``/metrics`` (Prometheus)."""
from __future__ import annotations

import time

from celery import current_app as celery_app  # the app of config/celery.py (current once config is imported)
from django.db import connection
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue (not counting those reserved by workers)."""
    from django.conf import settings

    depths = {}
    with celery_app.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in settings.MEDASSIST_QUEUES:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except Exception:  # a queue nobody declared yet is empty
                depths[queue] = 0
    return depths


@require_GET
def health(request):
    checks: dict[str, dict] = {}
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = {"ok": True, "transport": conn.transport.driver_type}
    except Exception as exc:
        checks["broker"] = {"ok": False, "error": type(exc).__name__}
    workers: list[str] = []
    if checks["broker"]["ok"]:
        try:
            replies = celery_app.control.ping(timeout=1.0) or []
            workers = sorted(name for reply in replies for name in reply)
        except Exception:
            pass
    checks["workers"] = {"ok": bool(workers), "count": len(workers), "names": workers}
    essential_ok = checks["database"]["ok"] and checks["broker"]["ok"]
    status = "ok" if essential_ok and workers else ("degraded" if essential_ok else "unavailable")
    body = {"status": status, "checks": checks, "seconds": round(time.perf_counter() - started, 3)}
    # No workers is "degraded", not down: the API still accepts and queues jobs.
    return JsonResponse(body, status=200 if essential_ok else 503)


class _StateCollector:
    """Gauges computed from the database and broker at scrape time."""

    def collect(self):
        from medassist.jobs.models import Job

        jobs = GaugeMetricFamily("medassist_jobs", "Jobs by status", labels=["status"])
        counts = dict(Job.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        for status in Job.Status.values:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        depth = GaugeMetricFamily("medassist_queue_depth", "Messages waiting per Celery queue", labels=["queue"])
        try:
            for queue, n in queue_depths().items():
                depth.add_metric([queue], n)
        except Exception:
            pass
        yield depth


@require_GET
def metrics(request):
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_StateCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
