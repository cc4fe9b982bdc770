"""Does a run degrade gracefully when another process takes a core? Thread policy vs torch's default.

    python bench/bench_threads.py [--seconds 10] [--tokens 32] [--repeat 3]

Runs MT3 (full-size random checkpoint) on a clip in a fresh subprocess per setting, first on the
machine as it is, then with a CPU hog beside it (one busy-looping process per ``--hogs``), with
* torch's default: one OpenMP thread per core (what a plain ``import torch`` does),
* ``mt3_demo.threads.thread_policy()``: the cores allowed to this process minus those busy now,
* 1 thread.
Each cell is the fastest of ``--repeat`` transcriptions; the last column is with hog ÷ without.
A shared machine is noisy: compare the rows of one run, not runs of different days.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_model_checkpoint, test_signal  # noqa: E402
from harness import best_of, run_in_child, table, write_result  # noqa: E402

SETTINGS = ("default", "policy", "1")


def child(folder: str, setting: str, seconds: float, tokens: int, repeat: int) -> dict:
    """In a fresh process (``run_in_child``): the fastest of ``repeat`` MT3 runs at one thread setting."""
    import torch

    from mt3_demo.models.mt3 import adapter
    from mt3_demo.models.mt3.decoding import generate_ids
    from mt3_demo.threads import choose_threads, thread_policy

    tr = adapter.build(adapter.resolve(Path(folder)), torch.device("cpu"))  # tokens: below, per call
    x = test_signal(seconds)

    def once() -> str:
        """One run at the setting; the thread count it ran with."""
        if setting == "policy":
            with thread_policy() as n:
                chosen = f"{n} ({choose_threads()[1]})"
                generate_ids(tr.model, tr.frontend, x, max_tokens=tokens, stop_at_eos=False)
                return chosen
        torch.set_num_threads(os.cpu_count() if setting == "default" else int(setting))
        generate_ids(tr.model, tr.frontend, x, max_tokens=tokens, stop_at_eos=False)
        return str(torch.get_num_threads())

    seconds_best, threads = best_of(once, repeat)
    return {"best_s": seconds_best, "threads": threads}


def run_child(folder: Path, setting: str, a: argparse.Namespace) -> dict:
    return run_in_child(child, str(folder), setting, a.seconds, a.tokens, a.repeat, timeout=3600)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--hogs", type=int, default=1, help="busy-looping processes beside the run")
    a = p.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; MT3 {a.seconds:g} s clip, "
          f"{a.tokens} tokens/segment, fastest of {a.repeat}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mt3"
        write_model_checkpoint("mt3", folder)
        quiet = {s: run_child(folder, s, a) for s in SETTINGS}
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.hogs)]
        try:
            time.sleep(1.0)  # let the hogs show up in /proc/stat
            busy = {s: run_child(folder, s, a) for s in SETTINGS}
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    for s in SETTINGS:
        rows.append({"threads": {"default": "torch default (1 per core)", "policy": "thread_policy()",
                                 "1": "1"}[s],
                     "chosen (quiet)": quiet[s]["threads"], "quiet s": quiet[s]["best_s"],
                     f"chosen ({a.hogs} hog)": busy[s]["threads"], f"with {a.hogs} hog s": busy[s]["best_s"],
                     "hog ÷ quiet": f"{busy[s]['best_s'] / quiet[s]['best_s']:.2f}x"})
    print(table(rows, list(rows[0])))
    write_result("bench_threads", rows, {
        f"with {a.hogs} hog ÷ quiet, {r['threads']}": busy[s]["best_s"] / quiet[s]["best_s"]
        for s, r in zip(SETTINGS, rows)})


if __name__ == "__main__":
    main()
