"""Prometheus metrics, shared by web and worker processes (multi-process mode).

Counters and histograms are written by whichever process observes them (workers); gauges that
describe stored state (jobs by status, queue depth) are computed at scrape time.
"""
from __future__ import annotations

import os
import socket

from prometheus_client import Counter, Histogram, values

# Files in the shared multi-process directory are named by process id, and containers of one
# host all run their main process as pid 1: add the host name so web and workers never collide.
# (No "_" allowed: prometheus_client splits file names on it.)
_HOST = socket.gethostname().replace("_", "-")
values.ValueClass = values.MultiProcessValue(process_identifier=lambda: f"{_HOST}-{os.getpid()}")

ITEMS_PROCESSED = Counter("medassist_items_processed", "Job items processed by workers (succeeded or failed)")
CHUNK_SECONDS = Histogram(
    "medassist_chunk_duration_seconds", "Wall time of one chunk task",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def observe_chunk(*, seconds: float, processed: int) -> None:
    CHUNK_SECONDS.observe(seconds)
    if processed:
        ITEMS_PROCESSED.inc(processed)
