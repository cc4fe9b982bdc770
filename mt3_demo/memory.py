"""How much memory one transcription run needs beyond the loaded weights, from measurements.

``bench/bench_memory.py`` runs each model on test signals of several lengths in fresh processes
and fits ``run peak ≈ base + per_minute · minutes`` (peak RSS during ``transcribe`` minus RSS
before it, CPU, float32). The manager counts this for every run in progress next to the weights
it keeps loaded, unloads idle models to make room, and refuses a run that cannot fit even alone.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunMemory:
    base_mb: float  # what a run of any length needs (one segment's activations, buffers)
    per_minute_mb: float  # growth with the audio's length
    measured: str  # where the numbers come from

    def mb(self, seconds: float) -> float:
        return self.base_mb + self.per_minute_mb * max(0.0, seconds) / 60.0


# Measured with bench/bench_memory.py on the 2-core development CPU, float32 (README "Security and
# limits"). Both models work in windows, so the run peak hardly grows with the file: over 20-80 s
# the growth is below the measurement noise (±50 MB), and per_minute is the signal's own size.
RUN_MEMORY: dict[str, RunMemory] = {
    # Real weights; run peak 1179 / 1135 / 1129 MB at 20 / 40 / 80 s: one 16 s window's scorer.
    # Per minute: the 44.1 kHz float32 signal and its padded copy, 2 × 10.6 MB.
    "transkun": RunMemory(1180.0, 21.0, "bench_memory.py: real weights, 20-80 s"),
    # Full-size random weights at 64 tokens per segment: 109 / 175 / 152 MB at 20 / 40 / 80 s (one
    # chunk of 16 segments at most); plus the self-attention cache of 1024-token segments, which
    # 64 tokens do not reach: 16 segments × 1024 × 8 layers × (k, v) × 512 × 4 B = 512 MB.
    # Per minute: the 16 kHz signal and its features (< 10 MB).
    "mt3": RunMemory(175.0 + 512.0, 10.0, "bench_memory.py: random full-size weights + KV-cache bound"),
}
# Not measured yet (MR-MT3, YourMT3+): the largest measured need, so admission errs on the side of
# unloading an idle model rather than running out of memory.
_LARGEST = RunMemory(max(m.base_mb for m in RUN_MEMORY.values()),
                     max(m.per_minute_mb for m in RUN_MEMORY.values()), "not measured: largest measured")
RUN_MEMORY.update({"mr_mt3": _LARGEST, "yourmt3": _LARGEST})


def run_mb(model_id: str, seconds: float) -> float:
    """Megabytes one run of ``model_id`` on ``seconds`` of audio needs on top of its weights
    (0 for a model outside the registry: only its weights are counted)."""
    entry = RUN_MEMORY.get(model_id)
    return entry.mb(seconds) if entry is not None else 0.0
