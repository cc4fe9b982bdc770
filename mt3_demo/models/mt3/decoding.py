"""Audio → generated ids for every segment: frontend, encoder and greedy decoding, batched.

All segments of a file go through as one batch; the batch is split into chunks only to bound
memory (a full-size KV cache is ~25 MB per segment at 1024 tokens). Within a chunk the decoder
runs one position per step with a KV cache, and rows stop costing work once they emit EOS
(:func:`mt3_demo.models.t5.greedy_decode`).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..t5 import T5, greedy_decode
from . import features as F
from . import vocab

DEFAULT_MAX_TOKENS = 1024  # Magenta's decoder length (kunato: 1023)
AMP_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def default_batch_size(device: torch.device) -> int:
    """Segments per chunk: on the CPU 16 (~0.5 GB of cache at worst), more on a GPU."""
    return 64 if device.type == "cuda" else 16


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


def generate_ids(model: T5, frontend: F.LogMel, samples: np.ndarray | torch.Tensor, *,
                 max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int | None = None,
                 use_cache: bool = True, amp_dtype: torch.dtype | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 timings: Timings | None = None, eos_id: int = vocab.EOS) -> list[list[int]]:
    """Generated ids per segment (no start token; ending with EOS when it came within max_tokens).

    ``samples``: the whole 16 kHz mono signal. ``amp_dtype`` (fp16/bf16) autocasts the network on
    CUDA; the frontend always runs in float32. ``batch_size=1, use_cache=False`` is the naive
    reference (segment by segment, whole prefix re-run every step). ``eos_id=-1`` never stops early
    (benchmarks at a fixed decode length).
    """
    device = next(model.parameters()).device
    timings = timings if timings is not None else Timings()
    batch_size = batch_size or default_batch_size(device)
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32) if not torch.is_tensor(samples) else samples,
                        dtype=torch.float32).to(device)
    total = F.num_segments(x.shape[0])
    amp = (torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None and device.type == "cuda"
           else contextlib.nullcontext())
    out: list[list[int]] = []
    steps = [0]

    def count_step(_step: int, _rows: int) -> None:
        steps[0] += 1

    with torch.inference_mode():
        for start in range(0, total, batch_size):
            stop = min(total, start + batch_size)
            t0 = time.perf_counter()
            feats = frontend(x, start, stop)
            _sync(device)
            t1 = time.perf_counter()
            with amp:
                memory = model.encode(feats)
                _sync(device)
                t2 = time.perf_counter()
                ids = greedy_decode(model, memory, max_tokens, use_cache=use_cache,
                                    start_id=vocab.PAD, eos_id=eos_id, on_step=count_step)
            t3 = time.perf_counter()
            timings.frontend_s += t1 - t0
            timings.encoder_s += t2 - t1
            timings.decode_s += t3 - t2
            timings.chunks.append(stop - start)
            out.extend(ids)
            if progress is not None:
                progress(stop, total)
    timings.decode_steps += steps[0]
    timings.tokens += sum(len(g) for g in out)
    return out
