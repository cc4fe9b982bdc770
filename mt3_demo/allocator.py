"""glibc's malloc, told to give memory back: tensor work in chunks leaves the C heap fragmented.

PyTorch's CPU tensors come from ``malloc``. Past the first freed large block glibc raises its mmap
threshold (up to 32 MB), so the next tensors of a few MB land in the heap instead of their own
mappings; the chunks of a long file then leave holes there that are reused only in part, and the
resident set grows from chunk to chunk (YourMT3+ at 160 s: 1.6–2.1 GB per run, run to run), and
what a run freed stays in the process after it (MT3: ~70 MB after each 20 s run).
:func:`release` (``malloc_trim(0)``) hands the free pages of every arena back to the kernel: the
manager calls it after each run (MT3 then keeps 0–10 MB).

The app runs every transcription on a worker thread, and glibc gives each new thread an arena of
its own: 64 MB heaps that are trimmed only from their top, so a run's freed chunks stay resident.
:func:`one_arena` (``mallopt(M_ARENA_MAX, 1)``), called by ``app.py`` before any thread starts,
keeps every thread on the main heap, which ``malloc_trim`` can return whole: the server's peak
for a 320 s YourMT3+ upload went from 2.07 to 1.71 GB at the same speed (169 vs 174 s;
``bench/server_memory.py``). The CLI runs on its main thread and does not need it.

Measured and not applied (README "Memory"): malloc_trim after each YourMT3+ chunk (same peak); a
cap of 2 arenas (MT3 runs on fresh threads kept more after each run, not less); a fixed mmap
threshold (``bench/bench_memory.py --malloc mmap1m``: a lower YourMT3+ peak, 1.28× slower).

Linux with glibc only; elsewhere (macOS, musl) it is a no-op, and it never raises.
"""
from __future__ import annotations

import ctypes
import sys
import threading

_lock = threading.Lock()
_libc: ctypes.CDLL | None = None
_looked_up = False


def _glibc() -> ctypes.CDLL | None:
    """libc when it is glibc (it has ``malloc_trim``), else None; looked up once."""
    global _libc, _looked_up
    with _lock:
        if not _looked_up:
            _looked_up = True
            if sys.platform.startswith("linux"):
                try:
                    lib = ctypes.CDLL("libc.so.6")
                    lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                    _libc = lib
                except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
                    _libc = None
        return _libc


def release() -> bool:
    """Return the heap's free pages to the kernel (``malloc_trim(0)``); True if any were."""
    lib = _glibc()
    return bool(lib.malloc_trim(0)) if lib is not None else False


M_ARENA_MAX = -8  # mallopt parameter number (glibc's malloc.h)


def one_arena() -> bool:
    """Every thread allocates from the main heap (``mallopt(M_ARENA_MAX, 1)``); True if applied.
    Call before the threads that should share it start: a thread keeps the arena it already has."""
    lib = _glibc()
    if lib is None:
        return False
    lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(lib.mallopt(M_ARENA_MAX, 1))
