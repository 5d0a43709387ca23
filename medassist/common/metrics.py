"""Prometheus metrics, shared by web and worker processes (multi-process mode).

Counters and histograms are written by whichever process observes them (workers; the web's HTTP
metrics come from django-prometheus); gauges that describe stored state (jobs by status, queue
depth) are computed at scrape time.

Every process writes its samples to files named by *host-pid* in ``PROMETHEUS_MULTIPROC_DIR``. A
process group clears its host's files of processes that are gone when it starts (gunicorn's
``on_starting`` in config/gunicorn.py, a Celery worker's ``worker_init`` here): files of live processes,
such as the workers of the same host or other containers sharing the folder, are left alone.
https://prometheus.github.io/client_python/multiprocess/
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from celery.signals import worker_init
from prometheus_client import Counter, Histogram, multiprocess, values

# Files in the shared multi-process directory are named by process id, and containers of one
# host all run their main process as pid 1: add the host name so web and workers never collide.
# (No "_" allowed: prometheus_client splits file names on it.)
_HOST = socket.gethostname().replace("_", "-")


def process_identifier(pid: int | None = None) -> str:
    return f"{_HOST}-{os.getpid() if pid is None else pid}"


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)

ITEMS_PROCESSED = Counter("medassist_items_processed", "Job items processed by workers (succeeded or failed)")
CHUNK_SECONDS = Histogram(
    "medassist_chunk_duration_seconds", "Wall time of one chunk task",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def observe_chunk(*, seconds: float, processed: int) -> None:
    CHUNK_SECONDS.observe(seconds)
    if processed:
        ITEMS_PROCESSED.inc(processed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clear_stale_files(directory: str | os.PathLike | None = None) -> list[Path]:
    """Delete this host's sample files whose process has exited; returns the files deleted.

    Called when a process group (gunicorn, a Celery worker) starts: what its previous run left is
    removed, so /metrics no longer reports it. Files of other hosts, and of processes still running
    (another group on this host), stay.
    """
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not Path(directory).is_dir():
        return []
    removed = []
    for path in Path(directory).glob("*.db"):
        host, _, pid = path.stem.rsplit("_", 1)[-1].rpartition("-")
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def mark_process_dead(pid: int) -> None:
    """An exited child's live gauges stop counting (gunicorn's ``child_exit``)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(process_identifier(pid))


@worker_init.connect
def _clear_on_worker_start(**_) -> None:
    clear_stale_files()
