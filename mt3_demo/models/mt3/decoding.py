"""Audio → generated ids for every segment: frontend, encoder and greedy decoding, batched.

All segments of a file go through as one batch; the batch is split into chunks only to bound
memory. Why one batch: a decoder step at a few rows is bound by memory traffic — it reads every
decoder weight (~90 MB for MT3) whatever the batch — so each extra row in the same step is almost
free, while the same rows in separate batches each pay for the weights again. What a row costs is
its memory: its cross-attention keys/values (~6.3 MB for MT3's 256 frames) and its self-attention
cache (3.1 MB per 128 tokens, ~25 MB at 1024).

Rows rarely get near ``max_tokens`` (a 2-second segment of dense music is a few hundred tokens), so
sizing chunks for every row reaching it would cut a minute of audio into three chunks for memory
that is never used. :func:`default_batch_size` fits the rows into the budget at
``EXPECTED_TOKENS`` instead and evens the chunks out; the decoder
(:func:`mt3_demo.models.greedy.greedy_decode`, one position per step with a KV cache) is given the
budget and sets rows aside whenever their caches would outgrow it, so the worst case still stays
within the budget plus one row at ``max_tokens``.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..greedy import greedy_decode
from ..t5 import T5, T5Dims, cache_bytes
from . import features as F
from . import vocab

DEFAULT_MAX_TOKENS = 1024  # Magenta's decoder length (kunato: 1023)


DECODE_BUDGET_MB = {"cpu": 448, "cuda": 4096}  # per-chunk decoding state; weights not included
EXPECTED_TOKENS = 256  # chunks are sized for rows of this length; longer ones are set aside as needed
PROGRESS_STEPS = 32  # a progress report (and a chance to stop) at least every this many decoder steps
ENCODER_BATCH = 8  # segments per encoder call: the encoder is arithmetic-bound (256 rows per segment
# already fill a GEMM), so bigger calls only grow its transient activations (~4 MB per segment)


def other_bytes_per_segment(dims: T5Dims, max_tokens: int, frames: int = F.SEGMENT_FRAMES,
                            element_bytes: int = 4) -> int:
    """What a segment holds beside its cache while its chunk decodes: encoder output, logits and
    output ids — plus its features, as a margin for the transient frontend/encoder work (which runs
    ENCODER_BATCH segments at a time)."""
    return element_bytes * (frames * (dims.input_dim + dims.d_model) + dims.vocab_size) + 8 * max_tokens


def bytes_per_segment(dims: T5Dims, tokens: int, max_tokens: int | None = None) -> int:
    """Memory one segment holds while its chunk decodes, its rows at ``tokens`` ids."""
    return cache_bytes(dims, F.SEGMENT_FRAMES, tokens) + other_bytes_per_segment(dims, max_tokens or tokens)


def budget_bytes(device: torch.device, budget_mb: float | None = None) -> int:
    return int((budget_mb if budget_mb is not None else DECODE_BUDGET_MB.get(device.type, 512)) * 2**20)


def default_batch_size(dims: T5Dims, max_tokens: int, device: torch.device, total: int,
                       budget_mb: float | None = None) -> int:
    """Segments per chunk: all ``total`` when they fit the budget at ``EXPECTED_TOKENS`` (whatever
    ``max_tokens`` is, so a benchmark at a short fixed length chunks as the default run does), else
    as many as fit (at least 1), with the chunks evened out (30 segments at a cap of 16 → 2 chunks
    of 15, not 16 + 14)."""
    per_segment = bytes_per_segment(dims, EXPECTED_TOKENS, max_tokens)
    cap = max(1, budget_bytes(device, budget_mb) // per_segment)
    chunks = -(-max(total, 1) // cap)
    return -(-max(total, 1) // chunks)


@dataclass
class Timings:
    """Seconds per stage and decoder work, summed over chunks."""

    frontend_s: float = 0.0
    encoder_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0  # decoder calls (one per generated position per chunk)
    tokens: int = 0  # generated ids, all rows
    chunks: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"frontend_s": round(self.frontend_s, 4), "encoder_s": round(self.encoder_s, 4),
                "decode_s": round(self.decode_s, 4), "decode_steps": self.decode_steps, "tokens": self.tokens}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def encode_segments(model: T5, frontend: F.LogMel, x: torch.Tensor, start: int, stop: int,
                    timings: Timings) -> torch.Tensor:
    """Encoder output [stop − start, 256, d] of segments start..stop−1, ENCODER_BATCH at a time
    (features and activations are transient; only the encoder output is kept)."""
    device = x.device
    parts = []
    for i in range(start, stop, ENCODER_BATCH):
        t0 = time.perf_counter()
        feats = frontend(x, i, min(stop, i + ENCODER_BATCH))
        _sync(device)
        t1 = time.perf_counter()
        parts.append(model.encode(feats))
        _sync(device)
        timings.frontend_s += t1 - t0
        timings.encoder_s += time.perf_counter() - t1
    return torch.cat(parts)


def generate_ids(model: T5, frontend: F.LogMel, samples: np.ndarray | torch.Tensor, *,
                 max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int | None = None,
                 use_cache: bool = True, amp_dtype: torch.dtype | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 timings: Timings | None = None, stop_at_eos: bool = True,
                 budget_mb: float | None = None, static: bool | None = None,
                 static_first: int | None = None) -> list[list[int]]:
    """Generated ids per segment (no start token; ending with EOS when it came within max_tokens).

    ``samples``: the whole 16 kHz mono signal. ``amp_dtype`` (fp16/bf16) autocasts the network on
    CUDA; the frontend always runs in float32. ``batch_size=1, use_cache=False`` is the naive
    reference (segment by segment, whole prefix re-run every step). ``stop_at_eos=False`` decodes
    exactly ``max_tokens`` per segment (benchmarks at a fixed decode length). Without
    ``batch_size`` the chunks and their caches are held to ``budget_mb`` (default
    :data:`DECODE_BUDGET_MB` of the device); a given ``batch_size`` is taken as it is.
    ``progress(done, total)`` counts finished segments, reported every ``PROGRESS_STEPS`` steps
    too (a caller stops the run by raising from it). ``static``: as in
    :func:`~mt3_demo.models.greedy.greedy_decode` (None: CUDA graphs where they apply), and
    ``static_first`` the positions its static cache starts with.
    """
    device = next(model.parameters()).device
    timings = timings if timings is not None else Timings()
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32) if not torch.is_tensor(samples) else samples,
                        dtype=torch.float32).to(device)
    total = F.num_segments(x.shape[0])
    cache_budget = None
    if not batch_size:
        batch_size = default_batch_size(model.dims, max_tokens, device, total, budget_mb)
        cache_budget = budget_bytes(device, budget_mb) - batch_size * other_bytes_per_segment(model.dims, max_tokens)
    amp = (torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None and device.type == "cuda"
           else contextlib.nullcontext())
    out: list[list[int]] = []
    steps, finished = [0], [0]  # decoder calls; rows finished in the current chunk

    def count_step(_step: int, _rows: int) -> None:
        steps[0] += 1
        if progress is not None and steps[0] % PROGRESS_STEPS == 0:
            progress(len(out) + finished[0], total)

    def count_finished(rows: int) -> None:
        finished[0] = rows
        if progress is not None:
            progress(len(out) + rows, total)

    with torch.inference_mode():
        for start in range(0, total, batch_size):
            stop = min(total, start + batch_size)
            with amp:
                memory = encode_segments(model, frontend, x, start, stop, timings)
                t2 = time.perf_counter()
                finished[0] = 0
                ids = greedy_decode(model, memory, max_tokens, use_cache=use_cache,
                                    start_id=vocab.PAD, eos_id=vocab.EOS if stop_at_eos else None,
                                    on_step=count_step, on_finished=count_finished, cache_budget=cache_budget,
                                    static=static, static_first=static_first)
                del memory
            timings.decode_s += time.perf_counter() - t2
            timings.chunks.append(stop - start)
            out.extend(ids)
    timings.decode_steps += steps[0]
    timings.tokens += sum(len(g) for g in out)
    return out
