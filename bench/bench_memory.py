"""Per-run memory of each model as a function of audio length (issue 13 item 8).

    python bench/bench_memory.py [--models transkun,mt3] [--seconds 15,30,60,120] [--tokens 64] [--malloc default,mmap1m]

Each (model, length) runs in a fresh subprocess: load the model, note the resident set (RSS), then
transcribe a music-like test signal while a thread samples RSS every 5 ms. Reported per run:
``weights_mb`` (RSS growth from loading), ``run_peak_mb`` (peak RSS during the transcription minus
RSS before it: what one run needs on top of the loaded model) and the least-squares line
``run_peak_mb ≈ base + per_minute · minutes`` over the lengths measured — the numbers the
manager's admission rule uses (``mt3_demo.memory.RUN_MEMORY``).

transkun runs its real weights from the wheel; ``transkun_wheel`` is the same model scoring all 90
pitch tracks of a segment at once, as the wheel does (the baseline for our grouped scoring). mt3,
mr_mt3 and yourmt3 run full-size seeded random checkpoints (the manifests' shapes) at a fixed
decode length (EOS disabled; ``--tokens``, per channel for yourmt3): their memory does not depend
on what the weights say, only on how many tokens are decoded per segment.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, TOKEN_MODELS, fixed_decoding, table, test_signal, write_model_checkpoint  # noqa: E402


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class PeakSampler:
    """Samples this process's RSS on a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s, self.peak, self._stop = interval_s, rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def build(model: str, folder: str, tokens: int):
    import torch

    if model in ("transkun", "transkun_wheel"):
        from mt3_demo.models.transkun import SPEC

        transcriber = SPEC.build(SPEC.resolve(), torch.device("cpu"), SPEC.options_type())
        transcriber.grouped_scoring = model == "transkun"  # transkun_wheel: the wheel's all-tracks scoring
        return transcriber
    if model in fixed_decoding(tokens):
        from mt3_demo.registry import load_registry

        spec = load_registry()[0][model]
        checkpoint = Path(folder) / "last.ckpt" if model == "yourmt3" else Path(folder)
        options = spec.options_type()
        return spec.build(spec.resolve(checkpoint, options), torch.device("cpu"), options)
    raise SystemExit(f"unknown model {model}")


# glibc settings compared by --malloc, each run in a fresh process with its environment.
MALLOC_POLICIES = {
    "default": {},
    # a fixed threshold: every block of 1 MiB or more gets its own mapping, returned when freed
    "mmap1m": {"env": {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}},
}


def child(model: str, seconds: float, folder: str, tokens: int, malloc: str = "default") -> None:
    """Subprocess body: prints one JSON line."""
    import numpy as np
    import torch

    from mt3_demo.audio import Clip

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    clip = Clip.from_array(test_signal(seconds, seed=1).astype(np.float32))
    before_load = rss_mb()
    transcriber = build(model, folder, tokens)
    before_run = rss_mb()
    t0 = time.perf_counter()
    with PeakSampler() as sampler, torch.inference_mode():
        out = transcriber.transcribe(clip, fixed_decoding(tokens).get(model))  # transkun: its defaults
    print(json.dumps({"model": model, "malloc": malloc, "seconds": seconds, "weights_mb": round(before_run - before_load, 1),
                      "run_peak_mb": round(sampler.peak - before_run, 1), "peak_rss_mb": round(sampler.peak, 1),
                      "wall_s": round(time.perf_counter() - t0, 1), "notes": len(out.notes)}))


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b·x``."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - b * mx, b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="transkun,mt3")
    p.add_argument("--seconds", default="15,30,60,120")
    p.add_argument("--tokens", type=int, default=64, help="token models: tokens decoded per segment")
    p.add_argument("--malloc", default="default",
                   help=f"comma-separated glibc malloc settings to compare, of {', '.join(MALLOC_POLICIES)}")
    p.add_argument("--child", nargs=5, metavar=("MODEL", "SECONDS", "FOLDER", "TOKENS", "MALLOC"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        model, seconds, folder, tokens, malloc = args.child
        child(model, float(seconds), folder, int(tokens), malloc)
        return
    policies = [m.strip() for m in args.malloc.split(",") if m.strip()]
    lengths = [float(s) for s in args.seconds.split(",")]
    rows, fits = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        for model in models:
            if model in TOKEN_MODELS:
                write_model_checkpoint(model, Path(tmp) / model)
        for model in models:
            points: dict[str, list] = {m: [] for m in policies}
            for seconds in lengths:
                for malloc in policies:  # interleaved, so a busy spell on the machine hits them alike
                    env = {**os.environ, **MALLOC_POLICIES[malloc].get("env", {})}
                    proc = subprocess.run([sys.executable, __file__, "--child", model, str(seconds),
                                           str(Path(tmp) / model), str(args.tokens), malloc],
                                          capture_output=True, text=True, cwd=ROOT, env=env)
                    if proc.returncode:
                        raise SystemExit(f"{model} {seconds}s ({malloc}) failed:\n{proc.stderr[-2000:]}")
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    rows.append(r)
                    points[malloc].append((seconds / 60, r["run_peak_mb"]))
                    print(json.dumps(r), file=sys.stderr)
            for malloc in policies:
                fits[(model, malloc)] = fit(points[malloc])
    print(table(rows, ["model", "malloc", "seconds", "weights_mb", "run_peak_mb", "peak_rss_mb", "wall_s"]))
    for (model, malloc), (base, per_min) in fits.items():
        print(f"{model} ({malloc}): run peak ≈ {base:.0f} MB + {per_min:.0f} MB per minute of audio")


if __name__ == "__main__":
    main()
