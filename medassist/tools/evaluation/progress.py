"""Progress bars for the measurement commands' long loops: tqdm on stderr, only for a person watching.

Off when stderr is not a terminal (CI, logs, ``call_command`` in tests, output piped to a file) or
with the commands' ``--no-progress``; the commands' stdout (the tables they print) is never touched.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TextIO, TypeVar

T = TypeVar("T")

__all__ = ["progress_enabled", "progress", "progress_for"]


def progress_enabled(no_progress: bool = False, stream: TextIO | None = None) -> bool:
    """True unless ``no_progress`` or ``stream`` (default stderr) is not a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not no_progress and bool(isatty and isatty())


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str | None = None,
             enabled: bool = True) -> Iterable[T]:
    """``iterable`` itself when not ``enabled``, else the same items through a tqdm bar on stderr."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def progress_for(desc: str, *, enabled: bool) -> Callable[[Iterable[T], int], Iterable[T]] | None:
    """A ``progress(iterable, total)`` wrapper for harnesses that take one (None when not ``enabled``)."""
    if not enabled:
        return None
    return lambda iterable, total: progress(iterable, total=total, desc=desc, enabled=True)
