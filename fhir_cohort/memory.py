"""Hand memory the process freed back to the operating system between the screen's phases.

The read and the evaluation free far more than they keep (worker results unpickled into rows,
per-patient lists moved into Arrow), but neither allocator returns it by itself: glibc's malloc
keeps freed heap pages for reuse, and Arrow's memory pool (mimalloc or jemalloc) keeps freed
segments. Later phases allocate elsewhere (Python objects in their own arenas, Arrow in its
pool), so what stays cached adds to the peak. No value moves.

Python's own allocator returns a 1 MiB arena only when every object in it is freed, and the
interpreter's free lists (up to 2,000 freed tuples of each length, floats, lists, dicts) keep
objects of a finished phase alive, scattered over the arenas that phase filled: at 100,000
patients they held 40-80 arenas (MiB) that only a full collection, which empties the free
lists, gives back. That collection costs about 0.15 s per call there (every tracked object is
visited once), so it runs only between the phases, twice per screen (in a pass of several
trials, after the read and after the last trial's evaluation).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache
from typing import Any


@cache
def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None (another C library: musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


# Patients from which a screen's full collection pays: below, the arenas it frees are few,
# while in a long-lived process (a notebook, the test suite) it visits every object held.
COLLECT_FROM_PATIENTS = 10_000


def worth_collecting(patients: int) -> bool:
    """Whether a screen of ``patients`` patients runs a full collection between its phases."""
    return patients >= COLLECT_FROM_PATIENTS


def release_free_memory(*, collect: bool = True) -> None:
    """Return freed Python arenas (after emptying the free lists), freed heap pages (glibc)
    and Arrow's unused cached memory to the system. ``collect=False``: no full collection,
    where the read's rows are still alive (a collection visits each of their millions of
    objects and frees none of them)."""
    if collect:
        gc.collect()  # a full collection also empties the free lists (CPython)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    if "pyarrow" in sys.modules:  # never imported just for this
        sys.modules["pyarrow"].default_memory_pool().release_unused()
