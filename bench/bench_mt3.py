"""MT3 speed and memory benchmark on a full-size random checkpoint (same shapes as mt3.pth).

    python bench/bench_mt3.py [--tokens 64] [--long-tokens 384] [--device cpu] [--threads 1]
                              [--rss-minutes 10] [--rss-full]

Builds a seeded random state dict from the manifest, saves it with torch.save like mt3.pth, loads
it through the adapter, then times a 10 s and a 60 s clip, in the same run, three ways:
* ours: the adapter's default (all segments of the file in one batch as the memory budget allows,
  KV cache, finished rows dropped in batches, rows that outgrow the budget set aside) — chunks are
  sized for EXPECTED_TOKENS whatever the decode length, exactly as in a default run;
* upstream-like: the same code in batches of 5 segments, as kunato's ``inference.py`` batches them
  (with the KV cache, as HF ``generate`` uses it) — what users of the upstream port actually run;
* naive: segment by segment without a KV cache (the whole prefix re-run every step): a floor
  nobody runs, kept as a secondary column only.
Each is repeated ``--repeat`` times and the minimum is kept (a shared machine only ever adds time). Random weights rarely emit
EOS, so both decode a fixed number of tokens per segment (EOS disabled): equal work, fair ratio.
The 60 s clip is timed once more at ``--long-tokens`` (every row longer than the chunks were sized
for, so the decoder sets rows aside: its worst case; the naive floor is skipped there).
Peak RSS for a long file is measured in a fresh subprocess.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, peak_rss_mb, table, test_signal, write_checkpoint  # noqa: E402

from mt3_demo.models.mt3 import adapter, features  # noqa: E402
from mt3_demo.models.mt3.decoding import (DECODE_BUDGET_MB, EXPECTED_TOKENS, Timings, default_batch_size,  # noqa: E402
                                          generate_ids)
from mt3_demo.options import MT3Options  # noqa: E402

UPSTREAM_BATCH = 5  # kunato/mt3-pytorch inference.py: segments per generate() call

MANIFEST = ROOT / "tests" / "fixtures" / "mt3" / "mt3_pth_manifest.json"


def run(transcriber, x, tokens: int, naive: bool, segments: int | None = None,
        batch_size: int | None = None, repeat: int = 1) -> dict:
    """Time frontend/encoder/decoder for ``segments`` segments of x (all by default); the fastest
    of ``repeat`` runs (stage by stage)."""
    if segments is not None:
        x = x[: segments * features.SEGMENT_SAMPLES - 1]  # exactly `segments` segments
    best = None
    for _ in range(repeat):
        t = Timings()
        t0 = time.perf_counter()
        generate_ids(transcriber.model, transcriber.frontend, x, max_tokens=tokens, stop_at_eos=False, timings=t,
                     batch_size=1 if naive else batch_size, use_cache=not naive)
        t.total_s = time.perf_counter() - t0
        if best is None or t.total_s < best.total_s:
            best = t
    t, total = best, best.total_s
    return {"total_s": total, "frontend_s": t.frontend_s, "encoder_s": t.encoder_s, "decode_s": t.decode_s,
            "steps": t.decode_steps, "tokens": t.tokens, "segments": len(t.chunks) and sum(t.chunks)}


def rss_child(folder: str, seconds: float, tokens: int, device: str) -> None:
    """Subprocess body: load, transcribe a long clip, print peak RSS as JSON."""
    stages = {"import": peak_rss_mb()}
    x = test_signal(seconds, seed=1)
    stages["signal"] = peak_rss_mb()
    tr = adapter.build(adapter.resolve(Path(folder)), torch.device(device), MT3Options())
    stages["load"] = peak_rss_mb()
    t0 = time.perf_counter()
    res = run(tr, x, tokens, naive=False)
    stages["transcribe"] = peak_rss_mb()
    batch = default_batch_size(tr.model.dims, tokens, tr.device, res["segments"])
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "stages": stages, "seconds": time.perf_counter() - t0,
                      "segments": res["segments"], "batch_size": batch}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=64, help="fixed decode length per segment (default 64)")
    p.add_argument("--long-tokens", type=int, default=384,
                   help="decode length of the extra 60 s run past EXPECTED_TOKENS (0 = skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--baseline-segments", type=int, default=5,
                   help="naive baseline on the 60 s clip: time this many segments and scale linearly "
                        "(its cost is exactly per segment); 0 = run it on every segment")
    p.add_argument("--rss-minutes", type=float, default=10.0)
    p.add_argument("--rss-tokens", type=int, default=32, help="decode length for the RSS run")
    p.add_argument("--rss-full", action="store_true",
                   help="also decode the long clip to the full 1024 tokens per segment (an hour on a CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default: torch's choice); 1 is steadier on a shared machine")
    p.add_argument("--repeat", type=int, default=3, help="runs per path; the minimum is kept")
    p.add_argument("--rss-child", nargs=4, metavar=("DIR", "SECONDS", "TOKENS", "DEVICE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.rss_child:
        rss_child(a.rss_child[0], float(a.rss_child[1]), int(a.rss_child[2]), a.rss_child[3])
        return

    torch.manual_seed(0)
    device = torch.device(a.device)
    manifest = json.loads(MANIFEST.read_text())
    print(f"torch {torch.__version__}, device {device}, {os.cpu_count()} cores, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}, fixed decode length {a.tokens} tokens/segment")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_checkpoint(Path(tmp) / "mt3", manifest, "mt3.pth", seed=0)
        t0 = time.perf_counter()
        tr = adapter.build(adapter.resolve(folder), device, MT3Options())
        load_s = time.perf_counter() - t0
        print(f"load (torch.load weights_only + strict check + build): {load_s:.2f} s, "
              f"{sum(p.numel() for p in tr.model.parameters()) / 1e6:.1f} M parameters")
        run(tr, test_signal(3.0), 4, naive=False)  # warm-up (allocator, kernels)

        rows = []
        cases = [(10.0, a.tokens), (60.0, a.tokens)] + ([(60.0, a.long_tokens)] if a.long_tokens else [])
        for seconds, tokens in cases:
            x = test_signal(seconds)
            n_seg = features.num_segments(len(x))
            auto = default_batch_size(tr.model.dims, tokens, device, n_seg)
            paths = [(f"ours (batches of {auto}, KV cache)", run(tr, x, tokens, naive=False, repeat=a.repeat), 1.0),
                     (f"upstream-like (batches of {UPSTREAM_BATCH}, KV cache)",
                      run(tr, x, tokens, naive=False, batch_size=UPSTREAM_BATCH, repeat=a.repeat), 1.0)]
            if tokens == a.tokens:
                limit = None if seconds <= 10 or a.baseline_segments <= 0 else min(a.baseline_segments, n_seg)
                base = run(tr, x, tokens, naive=True, segments=limit)
                scale = n_seg / base["segments"]
                paths.append(("naive (1 by 1, no cache)" + (" *" if scale != 1 else ""), base, scale))
            for name, r, s in paths:
                total = r["total_s"] * s
                rows.append({"clip": f"{seconds:.0f} s", "tokens": tokens, "path": name, "segments": n_seg,
                             "frontend s": r["frontend_s"] * s, "encoder s": r["encoder_s"] * s,
                             "decode s": r["decode_s"] * s, "steps": r["steps"], "steps/s": r["steps"] / r["decode_s"],
                             "tokens/s": r["tokens"] / r["decode_s"], "total s": total, "RTF": total / seconds})
            for r in rows[-len(paths):]:
                r["decode vs upstream-like"] = f"{rows[-len(paths) + 1]['decode s'] / r['decode s']:.2f}x"
                r["total vs naive"] = f"{rows[-1]['total s'] / r['total s']:.1f}x" if len(paths) == 3 else ""
        print()
        print(table(rows, ["clip", "tokens", "path", "segments", "frontend s", "encoder s", "decode s", "steps",
                           "steps/s", "tokens/s", "total s", "RTF", "decode vs upstream-like", "total vs naive"]))
        print(f"(fastest of {a.repeat} runs per path; naive run once)")
        if any("*" in r["path"] for r in rows):
            print(f"* timed on the first {a.baseline_segments} segments and scaled to all (cost is per segment)")

        del tr
        report_rss(folder, a, manifest["config_json"])


def rss_run(folder: Path, seconds: float, tokens: int, a: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(folder), str(seconds), str(tokens),
           a.device, "--threads", str(a.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print("RSS run failed:", proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report_rss(folder: Path, a: argparse.Namespace, d: dict) -> None:
    r = rss_run(folder, a.rss_minutes * 60, a.rss_tokens, a)
    if r is None:
        return
    st = r["stages"]
    print(f"\npeak RSS, {a.rss_minutes:g}-minute clip ({r['segments']} segments, {a.rss_tokens} tokens/segment, "
          f"chunks of {r['batch_size']}): {r['peak_rss_mb']:.0f} MB in {r['seconds']:.0f} s, of which "
          f"{st['import']:.0f} MB is importing torch and {st['load'] - st['signal']:.0f} MB loading the weights; "
          f"decoding added {r['peak_rss_mb'] - st['load']:.0f} MB (budget {DECODE_BUDGET_MB['cpu']} MB per chunk, "
          f"chunks sized for {EXPECTED_TOKENS} tokens per row whatever the decode length)")
    print("  peak RSS after each stage (MB): " + ", ".join(f"{k} {v:.0f}" for k, v in st.items()))
    if a.rss_full:
        seconds = a.rss_minutes * 60
        f = rss_run(folder, seconds, 1024, a)
        if f is not None:
            print(f"peak RSS, {a.rss_minutes:g}-minute clip decoded to 1024 tokens/segment: {f['peak_rss_mb']:.0f} MB "
                  f"in {f['seconds']:.0f} s (chunks of {f['batch_size']})")


if __name__ == "__main__":
    main()
