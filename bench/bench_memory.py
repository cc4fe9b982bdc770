"""Per-run memory of each model as a function of audio length.

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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOKEN_MODELS, fixed_decoding, test_signal, write_model_checkpoint  # noqa: E402
from harness import PeakSampler, rss_mb, run_in_child, table, write_result  # noqa: E402


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


def child(model: str, seconds: float, folder: str, tokens: int, malloc: str = "default") -> dict:
    """In a fresh process (``run_in_child``, with the malloc policy's environment): one run's memory."""
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
    return {"model": model, "malloc": malloc, "seconds": seconds, "weights_mb": round(before_run - before_load, 1),
            "run_peak_mb": round(sampler.peak_mb - before_run, 1), "peak_rss_mb": round(sampler.peak_mb, 1),
            "wall_s": round(time.perf_counter() - t0, 1), "notes": len(out.notes)}


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
    args = p.parse_args()
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
                    r = run_in_child(child, model, seconds, str(Path(tmp) / model), args.tokens, malloc,
                                     env=MALLOC_POLICIES[malloc].get("env", {}))
                    rows.append(r)
                    points[malloc].append((seconds / 60, r["run_peak_mb"]))
                    print(json.dumps(r), file=sys.stderr)
            for malloc in policies:
                fits[(model, malloc)] = fit(points[malloc])
    columns = ["model", "malloc", "seconds", "weights_mb", "run_peak_mb", "peak_rss_mb", "wall_s"]
    print(table(rows, columns))
    ratios = {}
    for (model, malloc), (base, per_min) in fits.items():
        print(f"{model} ({malloc}): run peak ≈ {base:.0f} MB + {per_min:.0f} MB per minute of audio")
        if len(lengths) > 1:  # a line through one point says nothing about the slope
            ratios[f"{model} ({malloc}): run peak MB at 0 s of audio (fit)"] = base
            ratios[f"{model} ({malloc}): run peak MB per minute of audio (fit)"] = per_min
    wheel = {(r["seconds"], r["malloc"]): r["run_peak_mb"] for r in rows if r["model"] == "transkun_wheel"}
    for r in rows:  # the baseline measured in the same run: the wheel's all-tracks scoring
        if r["model"] == "transkun" and (r["seconds"], r["malloc"]) in wheel:
            ratios[f"transkun at {r['seconds']:g} s: run peak, the wheel's scoring ÷ ours"] = (
                wheel[(r["seconds"], r["malloc"])] / r["run_peak_mb"])
    write_result("bench_memory", [{c: r[c] for c in columns} for r in rows], ratios)


if __name__ == "__main__":
    main()
