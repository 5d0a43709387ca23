"""Give freed heap memory back to the operating system.

Loading a model (the torch int8 path quantizes an fp32 copy; onnxruntime parses the graph and packs
the weights) and running a large batch free hundreds of MB that glibc keeps in the process heap, so
resident memory stays at its peak. ``malloc_trim(0)`` returns the free pages (bench_models measures
the resident memory it leaves). It walks the heap, so the worker calls it after a
model load and after each chunk, not per item. A no-op where the C library has no ``malloc_trim``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl, macOS: nothing to call
        return None


def release_freed_memory() -> bool:
    """Return free heap pages to the OS; True when the C library could do it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
