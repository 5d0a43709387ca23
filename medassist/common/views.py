"""Operational endpoints: ``/health/`` (database, broker, workers) and ``/metrics`` (Prometheus).

Who may see what (issue 13, deployment defaults): ``/health/`` answers everyone with its status and
counts (load balancers and the compose healthcheck need no credentials), but names the workers (host
names) only to a *privileged* caller; ``/metrics`` answers only privileged callers (403 otherwise).
Privileged: a logged-in active staff user (admin session), or ``Authorization: Bearer <token>`` with
``MEDASSIST_METRICS_TOKEN`` (compared in constant time; empty setting: no token works).
"""
from __future__ import annotations

import hmac
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


def is_privileged(request) -> bool:
    """Staff with an admin session, or the metrics bearer token."""
    from django.conf import settings

    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return True
    expected = getattr(settings, "MEDASSIST_METRICS_TOKEN", "") or ""
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                                 expected.encode())


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
    checks["workers"] = {"ok": bool(workers), "count": len(workers)}
    if is_privileged(request):  # worker names are host names: not for anonymous callers
        checks["workers"]["names"] = workers
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
    if not is_privileged(request):
        return JsonResponse({"detail": "Metrics are shown to staff or with the metrics token "
                                       "(Authorization: Bearer <MEDASSIST_METRICS_TOKEN>)."}, status=403)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_StateCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
