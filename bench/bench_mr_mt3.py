"""MR-MT3 speed benchmark on a full-size random checkpoint (the shapes of the published .ckpt files).

    python bench/bench_mr_mt3.py [--seconds 10] [--tokens 64] [--files 4] [--device cpu]

Builds a seeded random state dict from the MR-MT3 manifest (206 keys, 48.5 M parameters), saves it
Lightning-style (``state_dict`` under ``model.``) as the default file name, loads it through the
adapter (registry: N = 64, ``torchaudio-legacy``), then times one clip, all rows in the same run:

* MT3 path on the same weights (memory ignored): all segments batched, KV cache — the plain-MT3 cost;
* MT3 path, segments one by one with the KV cache — what sequential decoding alone costs;
* MR-MT3, ours: contiguous (segment k waits for k−1's tokens), KV cache, cross-attention keys/values
  of [encoder ; memory] computed once per segment, memory block computing only its N kept rows;
* MR-MT3 naive = upstream's way: contiguous, no KV cache (whole prefix re-run every step), memory
  stack over all 1024 rows;
* MR-MT3 with several files decoded together (one batch per segment index), per file.

Random weights rarely emit EOS, so every path decodes exactly ``--tokens`` per segment (EOS
disabled): equal work, fair ratios. Frontend + encoder are timed apart from decoding. Each row is
the fastest of ``--repeat`` runs (shared CPUs are noisy). ``--load-rss`` instead measures the peak
memory of loading a full-size file that carries AdamW moments like the published ones.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import test_signal, write_mr_mt3_checkpoint  # noqa: E402
from harness import best_of, peak_rss_mb, run_in_child, synchronize, table, write_result  # noqa: E402

from mt3_demo.models.mr_mt3 import adapter  # noqa: E402
from mt3_demo.models.mr_mt3.model import contiguous_decode, dummy_memory_ids  # noqa: E402
from mt3_demo.models.mt3 import features  # noqa: E402
from mt3_demo.models.mt3.decoding import Timings, generate_ids  # noqa: E402
from mt3_demo.options import MRMT3Options  # noqa: E402


def load_rss(path: str, mmap: bool) -> dict:
    """In a fresh process (``run_in_child``): peak RSS of loading one file, memory-mapped or read."""
    from mt3_demo.models.mr_mt3 import checkpoint as ck

    before = peak_rss_mb()
    seconds, _ = best_of(lambda: ck.load_model(ck.location_for_file(Path(path)), mmap=mmap), repeat=1)
    return {"mmap": "on" if mmap else "off", "before_mb": round(before, 1), "peak_mb": round(peak_rss_mb(), 1),
            "seconds": round(seconds, 2)}


def measure_load_rss() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mr_mt3_checkpoint(Path(tmp), adamw=True)
        size = path.stat().st_size
        rows = [{"file MB": round(size / 1e6), **run_in_child(load_rss, str(path), mmap)} for mmap in (True, False)]
    print(table(rows, list(rows[0])))
    write_result("bench_mr_mt3_load", rows, {"peak, read ÷ memory-mapped": rows[1]["peak_mb"] / rows[0]["peak_mb"]})


def time_mt3(model, x, tokens: int, batch_size: int, device) -> dict:
    """The MT3 issue's path (mt3.decoding.generate_ids) on the same network, memory unused."""
    t = Timings()
    frontend = features.LogMel(model.dims.input_dim, "zero", device)
    generate_ids(model, frontend, x, max_tokens=tokens, batch_size=batch_size, stop_at_eos=False, timings=t)
    return {"front+enc s": t.frontend_s + t.encoder_s, "decode s": t.decode_s, "steps": t.decode_steps,
            "tokens": t.tokens}


def time_mr_mt3(tr, clips: list, tokens: int, naive: bool) -> dict:
    t0 = time.perf_counter()
    encoded = [tr.encode(c) for c in clips]
    synchronize(tr.device)
    t1 = time.perf_counter()
    steps = [0]

    def count(_s, _r):
        steps[0] += 1

    ids = contiguous_decode(tr.model, encoded, tokens, use_cache=not naive, on_step=count, stop_at_eos=False)
    synchronize(tr.device)
    t2 = time.perf_counter()
    return {"front+enc s": t1 - t0, "decode s": t2 - t1, "steps": steps[0],
            "tokens": sum(len(g) for f in ids for g in f)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s = 5 segments)")
    p.add_argument("--tokens", type=int, default=64, help="fixed decode length per segment (default 64)")
    p.add_argument("--files", type=int, default=4, help="files decoded together in the batched row")
    p.add_argument("--baseline-segments", type=int, default=0,
                   help="naive row: time only the first N segments and scale to the clip (every segment "
                        "costs the same at a fixed decode length); 0 = all segments")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared machine 2+ OpenMP threads make the small "
                        "per-step matmuls of decoding ~10x slower; 0 = torch's default)")
    p.add_argument("--repeat", type=int, default=3, help="runs per row; the fastest is reported")
    p.add_argument("--load-rss", action="store_true", help="only measure loading a full-size file with "
                   "AdamW moments (peak RSS, memory-mapped vs read)")
    a = p.parse_args()
    if a.load_rss:
        measure_load_rss()
        return
    if a.threads > 0:
        torch.set_num_threads(a.threads)

    torch.manual_seed(0)
    device = torch.device(a.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}, clip {a.seconds:g} s, "
          f"fixed decode length {a.tokens} tokens/segment")
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        path = write_mr_mt3_checkpoint(Path(tmp))
        t0 = time.perf_counter()
        tr = adapter.build(adapter.resolve(path), device, MRMT3Options())
        load_s = time.perf_counter() - t0
        print(f"load (weights_only read + strict check + build): {load_s:.2f} s, "
              f"{sum(p.numel() for p in tr.model.parameters()) / 1e6:.1f} M parameters, "
              f"N = {tr.memory_length}, frontend {tr.frontend}")
        model = tr.model
        x = test_signal(a.seconds)
        n_seg = features.num_segments(len(x))
        time_mr_mt3(tr, [test_signal(2.0)], 4, naive=False)  # warm-up
        time_mt3(model, test_signal(2.0), 4, 16, device)

        # The memory block alone (one row of 1024 ids), shortcut vs the plain stack.
        ids = torch.tensor([dummy_memory_ids()], device=device)
        mb = {shortcut: best_of(lambda: model.memory_block(ids, shortcut), 5, sync=lambda: synchronize(device))[0]
              for shortcut in (True, False)}

        base_seg = a.baseline_segments if 0 < a.baseline_segments < n_seg else n_seg
        x_base = x[: base_seg * features.SEGMENT_SAMPLES - 1]  # exactly base_seg segments
        def best(fn):  # the run of the fastest of a few repeats, whose stage times it reports
            return best_of(fn, a.repeat)[1]

        clips = [test_signal(a.seconds, seed=s) for s in range(a.files)]
        runs = [
            ("MT3, segments batched, KV cache", best(lambda: time_mt3(model, x, a.tokens, 16, device)), 1),
            ("MT3, segments 1 by 1, KV cache", best(lambda: time_mt3(model, x, a.tokens, 1, device)), 1),
            ("MR-MT3 ours: contiguous, KV cache", best(lambda: time_mr_mt3(tr, [x], a.tokens, naive=False)), 1),
            ("MR-MT3 naive (upstream): no cache" + (" *" if base_seg < n_seg else ""),
             best(lambda: time_mr_mt3(tr, [x_base], a.tokens, naive=True)), base_seg / n_seg),
            (f"MR-MT3 ours, {a.files} files together (per file)",
             best(lambda: time_mr_mt3(tr, clips, a.tokens, naive=False)), a.files),
        ]
    rows = []
    mt3_total = runs[0][1]["front+enc s"] + runs[0][1]["decode s"]
    ours_total = runs[2][1]["front+enc s"] + runs[2][1]["decode s"]
    for name, r, files in runs:  # files: how many clips' worth of work the run did
        total = (r["front+enc s"] + r["decode s"]) / files
        rows.append({"path": name, "segments": n_seg, "front+enc s": r["front+enc s"] / files,
                     "decode s": r["decode s"] / files, "tokens/s": r["tokens"] / r["decode s"],
                     "total s": total, "RTF": total / a.seconds, "vs MT3": f"{total / mt3_total:.2f}x",
                     "vs MR-MT3 ours": f"{total / ours_total:.2f}x"})
    print()
    print(table(rows, ["path", "segments", "front+enc s", "decode s", "tokens/s", "total s", "RTF",
                       "vs MT3", "vs MR-MT3 ours"]))
    if base_seg < n_seg:
        print(f"* timed on the first {base_seg} segments and scaled to all {n_seg}")
    print(f"\nmemory block per segment (1024 ids -> {tr.memory_length} rows): "
          f"{mb[True] * 1e3:.1f} ms with the N-row shortcut, {mb[False] * 1e3:.1f} ms plain stack")
    naive, ours, batched = rows[3], rows[2], rows[4]
    write_result("bench_mr_mt3", rows, {
        "total, upstream's path (no cache) ÷ ours": naive["total s"] / ours["total s"],
        f"total per file, 1 file ÷ {a.files} files together": ours["total s"] / batched["total s"],
        "memory block, plain stack ÷ N-row shortcut": mb[False] / mb[True]})


if __name__ == "__main__":
    main()
