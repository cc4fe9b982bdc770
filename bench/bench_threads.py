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
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, table, test_signal, write_checkpoint  # noqa: E402

MANIFEST = ROOT / "tests" / "fixtures" / "mt3" / "mt3_pth_manifest.json"
SETTINGS = ("default", "policy", "1")


def child(folder: str, setting: str, seconds: float, tokens: int, repeat: int) -> None:
    import torch

    from mt3_demo.models.mt3 import adapter
    from mt3_demo.models.mt3.decoding import generate_ids
    from mt3_demo.threads import choose_threads, thread_policy

    tr = adapter.build(adapter.resolve(Path(folder)), torch.device("cpu"))
    x = test_signal(seconds)

    def once() -> float:
        t0 = time.perf_counter()
        generate_ids(tr.model, tr.frontend, x, max_tokens=tokens, stop_at_eos=False)
        return time.perf_counter() - t0

    times, chosen = [], []
    for _ in range(repeat):
        if setting == "policy":
            with thread_policy() as n:
                chosen.append(f"{n} ({choose_threads()[1]})")
                times.append(once())
        else:
            torch.set_num_threads(os.cpu_count() if setting == "default" else int(setting))
            chosen.append(str(torch.get_num_threads()))
            times.append(once())
    print(json.dumps({"best_s": min(times), "threads": chosen[times.index(min(times))]}))


def run_child(folder: Path, setting: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(folder), setting, "--seconds", str(a.seconds),
           "--tokens", str(a.tokens), "--repeat", str(a.repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--hogs", type=int, default=1, help="busy-looping processes beside the run")
    p.add_argument("--child", nargs=2, metavar=("DIR", "SETTING"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child[0], a.child[1], a.seconds, a.tokens, a.repeat)
        return
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; MT3 {a.seconds:g} s clip, "
          f"{a.tokens} tokens/segment, fastest of {a.repeat}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_checkpoint(Path(tmp) / "mt3", json.loads(MANIFEST.read_text()), "mt3.pth")
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


if __name__ == "__main__":
    main()
