"""The allocator policy: malloc_trim gives freed heap pages back; off glibc everything is a no-op."""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pytest

from mt3_demo import allocator
from tests.test_manager import CLIP, fake_spec, make_manager


def rss_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def fresh_lookup(monkeypatch):
    """Forget the cached libc so the next call looks it up again (under the test's sys.platform)."""
    monkeypatch.setattr(allocator, "_looked_up", False)
    monkeypatch.setattr(allocator, "_libc", None)


def test_no_op_without_glibc(monkeypatch, fresh_lookup):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.release() is False


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_release_hands_freed_heap_pages_back():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block = 64 * 1024  # below glibc's mmap threshold: these come from the heap
    blocks = [libc.malloc(block) for _ in range(1600)]  # 100 MiB
    for b in blocks:
        ctypes.memset(b, 1, block)  # touched, so resident
    for b in blocks[:-1]:  # the last one stays: the heap's top cannot shrink past it
        libc.free(b)
    before = rss_kb()
    assert allocator.release() is True
    # At least 3/4 of the ~100 MiB freed below the pinned top go back (the rest: arena bookkeeping,
    # pages other tests' allocations share).
    assert before - rss_kb() > 0.75 * 100 * 1024
    libc.free(blocks[-1])


def test_manager_releases_after_every_run_even_a_failed_one(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "release", lambda: calls.append(1) or True)
    m = make_manager([fake_spec("a"), fake_spec("b", during=lambda: 1 / 0)])
    m.transcribe("a", CLIP)
    assert len(calls) == 1
    with pytest.raises(ZeroDivisionError):
        m.transcribe("b", CLIP)
    assert len(calls) == 2


ARENA_PROBE = r"""
import ctypes, sys, tempfile, threading
from mt3_demo import allocator
if sys.argv[1] == "one":
    assert allocator.one_arena()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def work():
    blocks = [libc.malloc(64 * 1024) for _ in range(64)]
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
path = tempfile.mktemp()
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
print(open(path).read().count("<heap nr="))
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
@pytest.mark.parametrize("policy", ["default", "one"])
def test_one_arena_keeps_worker_threads_on_the_main_heap(policy):
    """Threads that allocate get arenas of their own by default; after one_arena() they share the
    main heap (the one malloc_trim can hand back whole)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", ARENA_PROBE, policy], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    arenas = int(out.stdout.strip().splitlines()[-1])  # the last line: an import may print before it
    assert arenas == 1 if policy == "one" else arenas > 1, (policy, arenas)
