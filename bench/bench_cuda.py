"""The CUDA path, measured: each token model at fp32 and at the opt-in half precisions.

    python bench/bench_cuda.py [--models mt3,mr_mt3,yourmt3] [--seconds 60] [--repeat 3]
                               [--tokens mt3=256,mr_mt3=64,yourmt3=64]
    python bench/bench_cuda.py --growth 1024   (MT3: growing static cache vs allocated whole)

Two parts, in one run on the GPU:

* **Ids on the fixtures.** Each tiny upstream-format checkpoint of tests/fixtures transcribes its
  fixture clip on the CPU in fp32 (what the parity tests prove equal to upstream) and on CUDA at
  fp32, bf16 and fp16. Printed per precision: rows (segments; YourMT3+: segment × channel) whose
  ids equal the CPU's, and the earliest step where one differs.
* **Speed and memory.** A full-size random checkpoint of each model (bench/common.py, the
  published layout) is loaded through its adapter and transcribes a ``--seconds`` clip with EOS
  off, so every precision and path decodes the same number of ids. Printed: stage times (fastest of
  ``--repeat`` after a warm-up), the real-time factor, the peak of CUDA memory the run allocated
  beyond the loaded weights, and how many rows' ids equal fp32's (random weights: near-ties are
  common, so this is a lower bound of what real weights give). MT3 is also timed in kunato's
  batches of 5 segments (what users of the upstream port run), at fp32.

Without CUDA it says so and exits 0 (``--device cpu`` runs the same script on the CPU, as a smoke
test: no memory figures).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import traceback
from pathlib import Path

import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fixed_decoding, test_signal, write_model_checkpoint  # noqa: E402
from harness import ROOT, best_of, synchronize, table, write_result  # noqa: E402

from mt3_demo.audio import Clip  # noqa: E402
from mt3_demo.models import greedy  # noqa: E402
from mt3_demo.models.mr_mt3 import SPEC as MR_MT3  # noqa: E402
from mt3_demo.models.mt3.adapter import SPEC as MT3  # noqa: E402
from mt3_demo.models.yourmt3.adapter import SPEC as YOURMT3  # noqa: E402
from mt3_demo.options import MRMT3Options, MT3Decode, MT3Options, YourMT3Decode, YourMT3Options  # noqa: E402

FIX = ROOT / "tests" / "fixtures"
SPECS = {"mt3": MT3, "mr_mt3": MR_MT3, "yourmt3": YOURMT3}
PRECISIONS = ("fp32", "bf16", "fp16")
# (name, model, checkpoint, clip, load options, decode options): the parity tests' own settings
FIXTURE_RUNS = [
    ("mt3 tiny (kunato)", "mt3", FIX / "mt3" / "tiny_model", FIX / "mt3" / "logmel" / "signal_a.wav",
     MT3Options(compat="kunato"), MT3Decode(max_tokens=63)),
    ("mr_mt3 set a", "mr_mt3", FIX / "mr_mt3", FIX / "mr_mt3" / "audio.wav", MRMT3Options(), None),
    ("mr_mt3 set b", "mr_mt3", FIX / "mr_mt3" / "set_b", FIX / "mr_mt3" / "set_b" / "audio.wav", MRMT3Options(),
     None),
    ("yourmt3 set b", "yourmt3", FIX / "yourmt3" / "set_b" / "tiny_model", FIX / "yourmt3" / "set_b" / "audio.wav",
     YourMT3Options(), YourMT3Decode(max_tokens=24)),
]


def rows_of(tokens: list) -> list[list[int]]:
    """Decoded rows: a segment's ids, or (YourMT3+) each channel of each segment."""
    out = []
    for seg in tokens:
        out.extend(seg if seg and isinstance(seg[0], list) else [seg])
    return out


def agreement(rows: list[list[int]], ref: list[list[int]]) -> tuple[int, int, int | None]:
    """(rows equal to ref, rows, earliest differing step or None)."""
    same, first = 0, None
    for a, b in zip(rows, ref):
        if a == b:
            same += 1
            continue
        step = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        first = step if first is None else min(first, step)
    return same, len(ref), first


def load_clip(path: Path) -> Clip:
    x, sr = sf.read(path, dtype="float32")
    return Clip.from_array(x, sr)


def fixture_ids(device: torch.device) -> list[dict]:
    rows = []
    for name, model, folder, wav, options, decode in FIXTURE_RUNS:
        spec, clip = SPECS[model], load_clip(wav)
        ref = rows_of(spec.build(spec.resolve(folder), torch.device("cpu"), options).transcribe(clip, decode).tokens)
        row = {"fixture": name, "rows": len(ref)}
        for p in PRECISIONS:
            t = spec.build(spec.resolve(folder), device, dataclasses.replace(options, precision=p))
            same, n, first = agreement(rows_of(t.transcribe(clip, decode).tokens), ref)
            row[p] = f"{same}/{n}" + ("" if first is None else f" (from step {first})")
        rows.append(row)
    return rows


def allocated(device: torch.device, peak: bool = False) -> int:
    if device.type != "cuda":
        return 0
    return torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)


def timed(transcriber, clip: Clip, repeat: int, decode=None) -> tuple[float, dict, list]:
    """Fastest of ``repeat`` transcriptions: (seconds, its stage timings, its tokens)."""
    seconds, out = best_of(lambda: transcriber.transcribe(clip, decode), repeat,
                           sync=lambda: synchronize(transcriber.device))
    return seconds, out.info.get("stage_timings", {}), out.tokens


def speed(model: str, folder: Path, decode, clip: Clip, device: torch.device, repeat: int) -> list[dict]:
    """Each path: load options (precision) and decode options (graphs off, batch size) of one run."""
    spec, rows, ref = SPECS[model], [], None
    fp32 = spec.options_type(precision="fp32")
    paths = [("fp32", fp32, decode), ("fp32, no graphs (cuda_graphs=False)", fp32,
                                      dataclasses.replace(decode, cuda_graphs=False))]
    paths += [(p, spec.options_type(precision=p), decode) for p in PRECISIONS[1:]]
    if model == "mt3":
        paths.append(("fp32, batches of 5", fp32, dataclasses.replace(decode, batch_size=5)))
    for label, opts, dec in paths:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        before = allocated(device)
        load_s, t = best_of(lambda: spec.build(spec.resolve(folder), device, opts), 1, sync=lambda: synchronize(device))
        weights = allocated(device) - before
        t.transcribe(Clip.from_array(clip.samples[: 4 * 16000]), dec)  # warm-up: kernels, allocator
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base = allocated(device)
        seconds, stages, tokens = timed(t, clip, repeat, dec)
        peak = allocated(device, peak=True) - base
        toks = rows_of(tokens)
        ref = toks if ref is None else ref
        same, n, _ = agreement(toks, ref)
        rows.append({"model": model, "path": label, "load s": load_s, "weights MB": weights / 2**20,
                     **{k: v for k, v in stages.items() if k.endswith("_s")},
                     **({"ms/step": 1e3 * stages["decode_s"] / stages["decode_steps"]}
                        if stages.get("decode_steps") else {}),
                     "total s": seconds, "RTF": seconds / clip.duration, "ids": sum(map(len, toks)),
                     "run peak MB": peak / 2**20, "rows = fp32": f"{same}/{n}"})
        if model == "mt3" and stages.get("decode_steps"):
            step_bytes = mt3_step_bytes(t, len(tokens), dec.max_tokens, dec.batch_size)
            rows[-1]["bound ms/step"] = 1e3 * step_bytes / bandwidth(device)
        del t
    return rows


def growth(device: torch.device, seconds: float, tokens: int, repeat: int) -> None:
    """MT3 decode time and run peak with the static cache growing from ``greedy.STATIC_FIRST`` positions
    against holding all ``tokens`` positions from the start (EOS off: every row runs to the end)."""
    clip = Clip.from_array(test_signal(seconds))
    grow_from = greedy.STATIC_FIRST
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mt3"
        write_model_checkpoint("mt3", folder)
        t = MT3.build(MT3.resolve(folder), device, MT3Options())
        for first in (grow_from, tokens):
            decode = dataclasses.replace(fixed_decoding(tokens)["mt3"], static_cache_start=first)
            t.transcribe(Clip.from_array(clip.samples[: 4 * 16000]), decode)  # warm-up
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            base = allocated(device)
            total, stages, _ = timed(t, clip, repeat, decode)
            rows.append({"static cache": f"from {first}" + (" (grows)" if first < tokens else " (whole)"),
                         "decode s": stages["decode_s"], "ms/step": 1e3 * stages["decode_s"] / stages["decode_steps"],
                         "total s": total, "run peak MB": (allocated(device, peak=True) - base) / 2**20})
    print(f"\nMT3, {seconds:g} s clip, {tokens} ids per segment (EOS off), fastest of {repeat}")
    print(table(rows, ["static cache", "decode s", "ms/step", "total s", "run peak MB"]))
    if device.type == "cuda":  # a CPU run is a smoke test of this script, not a result
        write_result(f"bench_cuda_growth_{tokens}", rows, {
            "decode, whole ÷ growing": rows[1]["decode s"] / rows[0]["decode s"],
            "run peak, whole ÷ growing": rows[1]["run peak MB"] / rows[0]["run peak MB"]})


def bandwidth(device: torch.device) -> float:
    """Bytes per second this device reads and writes: a 1 GiB copy, best of 5."""
    if device.type != "cuda":
        return float("nan")
    x = torch.empty(2**28, device=device)
    y = torch.empty_like(x)
    best = best_of(lambda: y.copy_(x), 5, sync=lambda: synchronize(device))[0]
    return 2 * x.numel() * x.element_size() / best


def mt3_step_bytes(transcriber, rows: int, tokens: int, batch_size: int | None = None) -> int:
    """What one MT3 decoder step must read at least, at the run's batch: the decoder weights and
    lm_head once, every row's cross-attention keys/values and its self-attention cache (at the
    mean length, tokens / 2)."""
    model = transcriber.model
    weights = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                  if n.startswith(("decoder.", "lm_head.")))
    chunk = min(rows, batch_size or rows)
    return weights + chunk * model.decoder.init_cache(
        torch.zeros(1, 256, model.dims.d_model, device=transcriber.device)).row_bytes(tokens // 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mt3,mr_mt3,yourmt3")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tokens", default="mt3=256,mr_mt3=64,yourmt3=64",
                    help="fixed ids per segment (YourMT3+: per channel), EOS off")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-fixtures", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--growth", type=int, default=0, metavar="TOKENS",
                    help="instead: MT3 at TOKENS ids, the static cache growing from greedy.STATIC_FIRST "
                         "against allocated whole from the start")
    a = ap.parse_args()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: nothing to measure.")
        return
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
              f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    if a.growth:
        growth(device, a.seconds, a.growth, a.repeat)
        return
    fixtures = []
    if not a.skip_fixtures:
        print("\nIds on the fixtures, CUDA against the CPU's fp32 (rows equal; earliest differing step)")
        fixtures = fixture_ids(device)
        print(table(fixtures, ["fixture", "rows", *PRECISIONS]))

    tokens = {k: int(v) for k, v in (kv.split("=") for kv in a.tokens.split(","))}
    clip = Clip.from_array(test_signal(a.seconds))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models.split(","):
            folder = Path(tmp) / model
            write_model_checkpoint(model, folder)
            decode = fixed_decoding(tokens[model])[model]
            try:
                rows += speed(model, folder, decode, clip, device, a.repeat)
            except Exception:  # one model's failure is a finding, not the end of the run
                traceback.print_exc()
                continue
            print(json.dumps(rows[-1]), flush=True)
    stages = [k for k in ("frontend_s", "encoder_s", "frontend_encoder_s", "decode_s", "ms/step", "bound ms/step")
              if any(k in r for r in rows)]
    cols = ["model", "path", "load s", "weights MB", *stages, "total s", "RTF", "ids", "run peak MB", "rows = fp32"]
    print(f"\n{a.seconds:g} s clip, EOS off ({a.tokens}), fastest of {a.repeat}")
    print(table(rows, cols))
    ratios = {}
    for model in {r["model"] for r in rows}:
        mine = {r["path"]: r for r in rows if r["model"] == model}
        graph, steps = mine.get("fp32"), next((r for p, r in mine.items() if "no graphs" in p), None)
        if graph and steps:
            ratios[f"{model}: total, step by step ÷ CUDA graph"] = steps["total s"] / graph["total s"]
    if device.type == "cuda":  # a CPU run is a smoke test of this script, not a result
        # the fixture ids ride along as rows of their own (their columns are the precisions)
        write_result("bench_cuda", [{c: r.get(c) for c in cols} for r in rows] + fixtures, ratios)


if __name__ == "__main__":
    main()
