"""glibc's malloc, told to give memory back: tensor work in chunks leaves the C heap fragmented.

PyTorch's CPU tensors come from ``malloc``. Past the first freed large block glibc raises its mmap
threshold (up to 32 MB), so the next tensors of a few MB land in the heap instead of their own
mappings; the chunks of a long file then leave holes there that are reused only in part, and the
resident set grows from chunk to chunk (YourMT3+ at 160 s: 1.6–2.1 GB per run, run to run).
:func:`release` (``malloc_trim(0)``) hands the free pages of every arena back to the kernel; the
adapters call it after each chunk and the manager after each run. :func:`configure` caps the
number of arenas: glibc gives each thread that allocates its own (up to 8 per core), and the app
runs every request on a worker thread of its own, each arena keeping its free memory.

Linux with glibc only; elsewhere (macOS, musl) both are no-ops, and neither ever raises.
"""
from __future__ import annotations

import ctypes
import logging
import sys
import threading

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter numbers, from glibc's malloc.h
ARENA_MAX = 2  # arenas for the whole process: the main thread's and one shared by the workers

_lock = threading.Lock()
_libc: ctypes.CDLL | None = None
_looked_up = False


def _glibc() -> ctypes.CDLL | None:
    """libc when it is glibc (it has ``malloc_trim`` and ``mallopt``), else None; looked up once."""
    global _libc, _looked_up
    with _lock:
        if not _looked_up:
            _looked_up = True
            if sys.platform.startswith("linux"):
                try:
                    lib = ctypes.CDLL("libc.so.6")
                    lib.malloc_trim.argtypes, lib.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                    lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                    _libc = lib
                except (OSError, AttributeError):  # not glibc (musl has neither function)
                    _libc = None
        return _libc


def configure(arena_max: int | None = ARENA_MAX) -> bool:
    """Apply the process-wide policy once, at start (before worker threads allocate).
    Returns whether glibc took it."""
    lib = _glibc()
    if lib is None or arena_max is None:
        return False
    ok = bool(lib.mallopt(M_ARENA_MAX, int(arena_max)))
    if not ok:
        log.info("mallopt(M_ARENA_MAX, %d) was refused; the default arenas stay", arena_max)
    return ok


def release() -> bool:
    """Return the heap's free pages to the kernel (``malloc_trim(0)``); True if any were."""
    lib = _glibc()
    return bool(lib.malloc_trim(0)) if lib is not None else False
