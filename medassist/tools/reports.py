"""Helpers shared by the benchmark and evaluation commands: machine description, tables, doc sections.

Each benchmark owns one section of ``docs/benchmarks.md`` (each evaluation one of ``docs/evaluation.md``)
between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers and rewrites only that section, so
they can run separately.
"""
from __future__ import annotations

import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import connection

BENCHMARKS_MD = Path(settings.BASE_DIR) / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nMeasured tables written by the benchmark commands; each section names the command, "
          "the machine and the date. Ratios compare against a baseline measured in the same run.\n")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    broker = settings.CELERY_BROKER_URL.split("://", 1)[0]
    return (f"{cpu}, {os.cpu_count()} cores{memory}; Python {sys.version.split()[0]}; "
            f"database {connection.vendor}; broker {broker}")


def format_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, *, path: Path | None = None, header: str = HEADER) -> Path:
    """Replace (or append) the section ``name`` of ``path`` (default docs/benchmarks.md); a new file
    starts with ``header``."""
    path = Path(path or BENCHMARKS_MD)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else header
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"<!-- {name}:start -->\n{body.rstrip()}\n\n_Measured {stamp}._\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    return path
