"""How close each model runs to what this machine can do, stage by stage, at 1 thread and at all.

    python bench/roofline.py [--models mt3,mr_mt3,yourmt3] [--threads 1,all] [--tokens 32] [--repeat 3]

Everything is measured in this one run, on full-size random checkpoints (same shapes as the real
files; timings do not depend on the values):

Limits (per thread count)
* arithmetic: fp32 GEMM throughput, the best of a 2048² product and of each model's own largest
  encoder matmul shape; a stage's limit time is its FLOPs (counted by ``torch.utils.flop_counter``
  on the real call) divided by that;
* memory: read bandwidth over a buffer the size of one decoder step's traffic (its weights plus
  every row's cross-attention keys/values and self-attention cache), best of a plain ``sum`` and a
  matrix-vector product over the decoder's weights;
* each limit is measured just before and just after the model's stages and the better of the two
  kept (another process on a shared machine only ever slows a measurement down);
* a decoder step's limit is max(bytes / bandwidth, FLOPs / GEMM throughput) — at the batch the
  adapter uses (MT3: all segments of the clip; MR-MT3: one file, so 1 row; YourMT3: segments × 13).

Achieved: each stage timed the way the adapter runs it (fastest of ``--repeat``), and the fraction
limit / achieved. Where the rest goes: the profiler's top operators per stage, and the per-step
Python/dispatch overhead, measured as the same decoder step with every width shrunk to 8 (the same
operator sequence, next to no arithmetic). Notes decoding is pure Python: timed, no limit. The
flop counter sees matmuls, convolutions and attention only, so the frontend's FFT is not in its
"work" (its fraction is an upper bound) and elementwise passes count as overhead everywhere.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MT3_MANIFEST, random_state_dict_from_manifest, test_signal, write_yourmt3_checkpoint  # noqa: E402
from harness import best_of, table, write_result  # noqa: E402

from mt3_demo.models import t5  # noqa: E402
from mt3_demo.models.mr_mt3.model import MRMT3, dummy_memory_ids  # noqa: E402
from mt3_demo.models.mt3 import features as mt3_features  # noqa: E402
from mt3_demo.models.mt3.decoding import default_batch_size  # noqa: E402
from mt3_demo.models.mt3.notes import ids_to_notes  # noqa: E402
from mt3_demo.threads import allowed_cores  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Measuring


def fastest(fn: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls after one warm-up."""
    return best_of(fn, repeat, warmup=1)[0]


def flops_of(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def top_ops(fn: Callable[[], object], n: int = 4) -> str:
    """The ``n`` operators with the most self CPU time in one call of fn, with their shares."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return ", ".join(f"{e.key.replace('aten::', '').replace('_scaled_dot_product_flash_attention_for_cpu', 'sdpa')}"
                     f" {100 * e.self_cpu_time_total / total:.0f}%" for e in events[:n])


def gemm_gflops(m: int, k: int, n: int, repeat: int) -> float:
    a, b = torch.randn(m, k), torch.randn(n, k)
    return 2 * m * k * n / fastest(lambda: torch.nn.functional.linear(a, b), repeat) / 1e9


def read_gbps(n_bytes: int, d_model: int, repeat: int) -> float:
    """Read bandwidth over ``n_bytes``: best of sum() and a matrix-vector product (the decoder's case)."""
    buf = torch.randn(max(n_bytes // 4, d_model))
    w = buf[: buf.numel() // d_model * d_model].view(-1, d_model)
    v = torch.randn(d_model)
    t_sum = fastest(lambda: buf.sum(), repeat)
    t_mv = fastest(lambda: torch.mv(w, v), repeat)
    return max(buf.numel() * 4 / t_sum, w.numel() * 4 / t_mv) / 1e9


@dataclass
class Limits:
    gflops: float  # arithmetic roof, GFLOP/s
    gbps: float  # read bandwidth over one decoder step's bytes, GB/s
    gflops_shape: float  # GEMM throughput at the model's own encoder shape


# ------------------------------------------------------------------------------------------------
# Models: each gives the stage callables the adapter runs, at the batch it uses


@dataclass
class Stages:
    name: str
    segments: int
    rows: int  # decoder batch
    frontend: Callable[[], object]
    encoder: Callable[[], object]
    step_setup: Callable[[], Callable[[], object]]  # → one decoder step (cache primed, then stepping)
    step_bytes: int  # one decoder step's memory traffic
    notes: Callable[[], object]
    encoder_shape: tuple[int, int, int]  # its largest matmul (m, k, n) for the shape-specific roof
    tiny_step_setup: Callable[[], Callable[[], object]] | None = None  # same ops, width 8
    memory_block: Callable[[], object] | None = None


def decoder_bytes(decoder: torch.nn.Module, lm_head: torch.nn.Module, rows: int, cross_len: int,
                  self_len: int, dims: t5.T5Dims) -> int:
    """Weights read once + per row: cross keys/values over cross_len and the cache over self_len."""
    weights = sum(p.numel() for n, p in decoder.named_parameters()
                  if "embed_tokens" not in n and "additive_pe" not in n and "EncDecAttention.k" not in n
                  and "EncDecAttention.v" not in n) + sum(p.numel() for p in lm_head.parameters())
    per_row = dims.num_decoder_layers * 2 * dims.num_heads * dims.d_kv * (cross_len + self_len)
    return 4 * (weights + rows * per_row)


def stepper(decoder: Callable, lm_head: Callable, init_cache: Callable, memory: torch.Tensor,
            prefix: int, embed: Callable | None = None) -> Callable[[], Callable[[], object]]:
    """Prime a cache with ``prefix`` steps, then return one more step (the cache reset to ``prefix``
    each call, so every timed step sees the same length)."""
    def setup():
        cache = init_cache(memory)
        tok = torch.zeros(memory.shape[0], 1, dtype=torch.long)
        for _ in range(prefix):
            x = embed(tok) if embed is not None else tok
            tok = lm_head(decoder(x, cache=cache)[:, -1]).argmax(-1)[:, None]

        def step():
            x = embed(tok) if embed is not None else tok
            out = lm_head(decoder(x, cache=cache)[:, -1]).argmax(-1)
            cache.length -= 1  # the next call overwrites the same position
            return out
        return step
    return setup


def shrunk(dims: t5.T5Dims) -> t5.T5Dims:
    return replace(dims, d_model=8, num_heads=1, d_kv=8, d_ff=8, input_dim=8, vocab_size=16)


def mt3_stages(seconds: float, tokens: int) -> Stages:
    manifest = json.loads(MT3_MANIFEST.read_text())
    sd = random_state_dict_from_manifest(manifest)
    dims = t5.dims_from_state_dict(manifest["config_json"], sd)
    model = t5.T5(dims)
    t5.load_t5_state_dict(model, sd, "random MT3")
    model.eval()
    x = torch.from_numpy(test_signal(seconds))
    frontend = mt3_features.LogMel(dims.input_dim, "clamp", torch.device("cpu"))
    n = mt3_features.num_segments(len(x))
    rows = default_batch_size(dims, tokens, torch.device("cpu"), n)
    feats = frontend(x, 0, n)
    memory = model.encode(feats[:rows])
    ids = [list(np.random.default_rng(i).integers(1000, 1130, tokens)) for i in range(n)]
    tiny = t5.T5(shrunk(dims)).eval()
    return Stages(
        name="MT3", segments=n, rows=rows,
        frontend=lambda: frontend(x, 0, n),
        encoder=lambda: model.encode(feats),
        step_setup=stepper(model.decoder, model.lm_head, model.decoder.init_cache, memory, tokens // 2),
        step_bytes=decoder_bytes(model.decoder, model.lm_head, rows, feats.shape[1], tokens // 2, dims),
        notes=lambda: ids_to_notes(ids, mt3_features.segment_start_times(n)),
        encoder_shape=(n * mt3_features.SEGMENT_FRAMES, dims.d_model, dims.d_ff),
        tiny_step_setup=stepper(tiny.decoder, tiny.lm_head, tiny.decoder.init_cache,
                                torch.zeros(rows, feats.shape[1], 8), tokens // 2),
    )


def mr_mt3_stages(seconds: float, tokens: int, memory_length: int = 64) -> Stages:
    """MR-MT3 = MT3's network + the memory block; one file decodes one segment at a time (1 row)."""
    dims = replace(t5.T5Dims(), max_positions=5000)
    torch.manual_seed(0)
    model = MRMT3(dims, memory_length=memory_length).eval()
    x = torch.from_numpy(test_signal(seconds))
    frontend = mt3_features.LogMel(dims.input_dim, "clamp", torch.device("cpu"))
    n = mt3_features.num_segments(len(x))
    feats = frontend(x, 0, n)
    mem_ids = torch.tensor([dummy_memory_ids()])
    ids = [list(np.random.default_rng(i).integers(1000, 1130, tokens)) for i in range(n)]
    cross = model.cross_memory(model.encode(feats[:1]), mem_ids)
    tiny = t5.T5(shrunk(dims)).eval()
    return Stages(
        name="MR-MT3", segments=n, rows=1,
        frontend=lambda: frontend(x, 0, n),
        encoder=lambda: model.encode(feats),
        memory_block=lambda: [model.memory_block(mem_ids) for _ in range(n)],
        step_setup=stepper(model.decoder, model.lm_head, model.decoder.init_cache, cross, tokens // 2),
        step_bytes=decoder_bytes(model.decoder, model.lm_head, 1, cross.shape[1], tokens // 2, dims),
        notes=lambda: ids_to_notes(ids, mt3_features.segment_start_times(n)),
        encoder_shape=(n * mt3_features.SEGMENT_FRAMES, dims.d_model, dims.d_ff),
        tiny_step_setup=stepper(tiny.decoder, tiny.lm_head, tiny.decoder.init_cache,
                                torch.zeros(1, cross.shape[1], 8), tokens // 2),
    )


def yourmt3_stages(seconds: float, tokens: int) -> Stages:
    from mt3_demo.models.yourmt3.decoder import TokenDecoder
    from mt3_demo.models.yourmt3.features import segment_audio, segment_start_times
    from mt3_demo.models.yourmt3.model import load_model
    from mt3_demo.models.yourmt3.notes import decode_tokens

    with tempfile.TemporaryDirectory() as tmp:
        model, _ = load_model(write_yourmt3_checkpoint(Path(tmp)))
    model.requires_grad_(False)  # FlopCounterMode's module hooks trip over parameters that require grad
    segments = torch.from_numpy(segment_audio(test_signal(seconds)))
    n = len(segments)
    spec = model.spectrogram(segments)
    memory = model.encode(spec).flatten(0, 1)  # [n·13, T, d]
    dims = model.dims.decoder
    dec = TokenDecoder(model.embed_tokens, model.decoder)
    rng = np.random.default_rng(0)
    ids = [[list(rng.integers(2, 590, tokens)) for _ in range(13)] for _ in range(n)]
    e = model.dims.encoder
    return Stages(
        name="YourMT3+", segments=n, rows=memory.shape[0],
        frontend=lambda: model.spectrogram(segments),
        encoder=lambda: model.encode(spec),
        step_setup=stepper(dec, model.lm_head, dec.init_cache, memory, tokens // 2),
        step_bytes=decoder_bytes(model.decoder, model.lm_head, memory.shape[0], memory.shape[1], tokens // 2, dims),
        notes=lambda: decode_tokens(ids, segment_start_times(n)),
        # the pre-encoder's 3×3 convolutions as a GEMM (im2col): rows = B·T·F, k = 9·C, n = C
        encoder_shape=(spec.shape[1] * 256, 9 * e.conv_channels, e.conv_channels),
    )


BUILDERS = {"mt3": (mt3_stages, 60.0), "mr_mt3": (mr_mt3_stages, 10.0), "yourmt3": (yourmt3_stages, 6.0)}


# ------------------------------------------------------------------------------------------------
# Report


COLUMNS = ["model", "threads", "stage", "work", "achieved", "limit", "fraction", "GFLOP/s", "where it goes"]


def measure(st: Stages, threads: int, repeat: int) -> list[dict]:
    """Raw timings of every stage: seconds, counted FLOPs, bytes (decoder step), top operators."""
    torch.set_num_threads(threads)
    raw = []
    stages = [(f"frontend ({st.segments} seg)", st.frontend), (f"encoder ({st.segments} seg)", st.encoder)]
    if st.memory_block is not None:
        stages.append((f"memory block ({st.segments} seg)", st.memory_block))
    for name, fn in stages:
        raw.append({"stage": name, "flops": flops_of(fn), "seconds": fastest(fn, repeat), "where": top_ops(fn)})
    step = st.step_setup()
    where = top_ops(step)
    if st.tiny_step_setup is not None:
        where += f"; Python/dispatch ≈ {fastest(st.tiny_step_setup(), max(5, 4 * repeat)) * 1e3:.1f} ms/step"
    raw.append({"stage": f"decoder step ({st.rows} rows)", "flops": flops_of(step), "bytes": st.step_bytes,
                "seconds": fastest(step, max(5, 4 * repeat)), "where": where})
    raw.append({"stage": "notes (tokens → notes)", "seconds": fastest(st.notes, repeat), "where": "pure Python"})
    return raw


def report(st: Stages, threads: int, raw: list[dict], lim: Limits) -> list[dict]:
    """Raw timings against the limits → table rows (fraction = limit time / achieved time)."""
    rows = []
    for r in raw:
        row = {"model": st.name, "threads": threads, "stage": r["stage"], "where it goes": r["where"]}
        ms = r["seconds"] * 1e3
        if "bytes" in r:  # decoder step: bandwidth or arithmetic, whichever binds
            t_bw, t_ar = r["bytes"] / (lim.gbps * 1e9), r["flops"] / (lim.gflops * 1e9)
            limit = max(t_bw, t_ar)
            row.update(work=f"{r['bytes'] / 2**20:.0f} MiB, {r['flops'] / 1e9:.2f} GFLOP", achieved=f"{ms:.2f} ms",
                       limit=f"{limit * 1e3:.2f} ms ({'memory' if t_bw >= t_ar else 'arithmetic'})")
        elif r.get("flops"):
            limit = r["flops"] / (max(lim.gflops, lim.gflops_shape) * 1e9)
            row.update(work=f"{r['flops'] / 1e9:.1f} GFLOP", achieved=f"{ms:.1f} ms", limit=f"{limit * 1e3:.1f} ms")
        else:  # notes, or a stage without counted FLOPs (an FFT-only spectrogram)
            rows.append({**row, "achieved": f"{ms:.1f} ms", "limit": "—", "fraction": "—"})
            continue
        row.update(fraction=f"{limit / r['seconds']:.0%}", **{"GFLOP/s": f"{r['flops'] / r['seconds'] / 1e9:.0f}"})
        rows.append(row)
    return rows


def measure_limits(st: Stages, repeat: int) -> Limits:
    return Limits(gflops=gemm_gflops(2048, 2048, 2048, repeat), gbps=read_gbps(st.step_bytes, 512, repeat),
                  gflops_shape=gemm_gflops(*st.encoder_shape, repeat))


def best_limits(a: Limits, b: Limits) -> Limits:
    """The machine can do at least the better of two measurements (another process only slows one)."""
    return Limits(max(a.gflops, b.gflops), max(a.gbps, b.gbps), max(a.gflops_shape, b.gflops_shape))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mt3,mr_mt3,yourmt3")
    p.add_argument("--threads", default="1,all", help="comma-separated thread counts; 'all' = cores allowed")
    p.add_argument("--tokens", type=int, default=32, help="decode length the step is measured at (middle of it)")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    cores = len(allowed_cores())
    counts = sorted({cores if t == "all" else int(t) for t in a.threads.split(",")})
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {cores} cores allowed, load average {os.getloadavg()[0]:.1f}; "
          f"fastest of {a.repeat} per stage; limits measured in this run")
    all_rows, limit_rows = [], []
    with torch.inference_mode():
        for key in a.models.split(","):
            build, seconds = BUILDERS[key]
            torch.set_num_threads(max(counts))
            st = build(seconds, a.tokens)
            for n in counts:
                torch.set_num_threads(n)
                before = measure_limits(st, a.repeat)
                raw = measure(st, n, a.repeat)
                lim = best_limits(before, measure_limits(st, a.repeat))
                limit_rows.append({"model": st.name, "threads": n, "GEMM 2048² GFLOP/s": f"{lim.gflops:.0f}",
                                   "GEMM at encoder shape": f"{lim.gflops_shape:.0f} {st.encoder_shape}",
                                   "read GB/s over one step's bytes": f"{lim.gbps:.1f} ({st.step_bytes / 2**20:.0f} MiB)"})
                rows = report(st, n, raw, lim)
                print(table(limit_rows[-1:], list(limit_rows[-1])), flush=True)
                print(table(rows, COLUMNS), "\n", flush=True)
                all_rows += rows
            del st
    print("\nSummary\n\nLimits measured on this machine\n")
    print(table(limit_rows, list(limit_rows[0])))
    print("\nAchieved vs limit (fraction = limit time / achieved time)\n")
    print(table(all_rows, COLUMNS))
    # the stage table is the result; the limits it was measured against go with it as rows of their own
    write_result("roofline", all_rows + [{"model": r["model"], "threads": r["threads"], "stage": "limits",
                                          "where it goes": "; ".join(f"{k}: {v}" for k, v in r.items()
                                                                     if k not in ("model", "threads"))}
                                         for r in limit_rows], {})


if __name__ == "__main__":
    main()
