"""How many intra-op threads torch gets on the CPU, chosen per run instead of torch's default.

torch starts one OpenMP thread per *host* core. On a shared machine that is a trap: every operator
ends in a barrier, so when one of our threads is descheduled (another process has its core) all the
others spin until it comes back. A decoder step is a few hundred small operators, so a busy core
turns a 2.6 s run into 24 s (measured: MT3, 2 threads, 2-core machine with a CPU hog beside it).

Policy, per run (:func:`choose_threads`):

1. ``Settings.threads`` (``MT3_DEMO_THREADS``, checked there: 1 to 64) set: that many, no
   questions asked.
2. Otherwise the cores this process may actually use: its CPU affinity (``os.sched_getaffinity``),
   capped by the cgroup CPU quota (``cpu.max``, what a container or a Space is really given),
3. minus those of them that are busy right now: each allowed core's idle share is sampled from
   ``/proc/stat`` over a short window, and a core more than half busy with someone else's work is
   left alone. At least one thread.

A core that becomes busy in the middle of a run is not noticed until the next run; with the policy's
thread count the worst case is then a 2-way share of one core, not a barrier storm on all of them.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Iterator

import torch

from .options import THREADS_ENV, Settings

ENV = THREADS_ENV
SAMPLE_SECONDS = 0.05  # /proc/stat ticks are 10 ms: 5 ticks per core is enough to tell busy from idle
BUSY_SHARE = 0.5  # a core busier than this (over the sample) belongs to someone else


def allowed_cores() -> list[int]:
    """CPU ids this process may run on (all of ``os.cpu_count()`` where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup v2 quota (``cpu.max`` "quota period"), None when unlimited/unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(int(quota) / int(period), 0.0)
    except (ValueError, ZeroDivisionError):
        return None


def _cpu_ticks(stat: str) -> dict[int, tuple[int, int]]:
    """``/proc/stat`` text → {cpu id: (busy ticks, total ticks)}."""
    out = {}
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + ticks[4]
        out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return out


def busy_cores(cores: list[int], seconds: float = SAMPLE_SECONDS) -> list[int]:
    """Those of ``cores`` busier than BUSY_SHARE over a ``seconds`` sample (none if /proc/stat is absent).

    Call it before this process starts working, or its own load counts as someone else's.
    """
    try:
        before = _cpu_ticks(Path("/proc/stat").read_text())
        time.sleep(seconds)
        after = _cpu_ticks(Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return []
    busy = []
    for c in cores:
        if c in before and c in after:
            d_busy, d_total = after[c][0] - before[c][0], after[c][1] - before[c][1]
            if d_total > 0 and d_busy / d_total > BUSY_SHARE:
                busy.append(c)
    return busy


def choose_threads(threads: int | None = None) -> tuple[int, str]:
    """(thread count, why) under the policy in the module docstring; ``threads``: the operator's
    override (``Settings.threads``), checked by the same rule (OptionError when out of range)."""
    threads = Settings(threads=threads).threads
    if threads is not None:
        return threads, f"{ENV}={threads}"
    cores = allowed_cores()
    quota = cgroup_quota()
    usable = len(cores) if quota is None else max(1, min(len(cores), math.floor(quota + 1e-9)))
    busy = len(busy_cores(cores)) if usable > 1 else 0
    n = max(1, min(usable, len(cores) - busy))
    why = f"{len(cores)} cores allowed" + (f", quota {quota:g}" if quota is not None else "") + \
        (f", {busy} busy" if busy else "")
    return n, why


@contextlib.contextmanager
def thread_policy(threads: int | None = None) -> Iterator[int]:
    """Run the block with :func:`choose_threads` intra-op threads; restore torch's setting after."""
    before = torch.get_num_threads()
    n, _ = choose_threads(threads)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
