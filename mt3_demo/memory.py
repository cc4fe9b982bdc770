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
    # Real weights; run peak 549 / 464 / 544 / 599 MB at 20 / 40 / 80 / 160 s: one 16 s window's
    # backbone activations and the glibc heap they leave behind (the scores are built 10 pitch
    # tracks at a time; all 90 at once, the wheel's way, it was 1179 / 1135 / 1129 MB at 20-80 s).
    # Per minute: the 44.1 kHz float32 signal and its padded copy, 2 × 10.6 MB.
    "transkun": RunMemory(600.0, 21.0, "bench_memory.py: real weights, 20-160 s"),
    # Full-size random weights at 64 tokens per segment: 226 MB at 40 s (one chunk of 20 segments;
    # re-measured after the load without sympy and the layer-by-layer cross-attention cache; with
    # the older load path it read 109 / 175 / 152 MB at 20 / 40 / 80 s, in other runs, so the
    # two are not compared; 20 and 80 s not re-measured); plus the self-attention cache of
    # 1024-token segments, which 64 tokens do not reach: 16 segments × 1024 × 8 layers × (k, v) ×
    # 512 × 4 B = 512 MB. Per minute: the 16 kHz signal and its features (< 10 MB).
    "mt3": RunMemory(226.0 + 512.0, 10.0, "bench_memory.py: random full-size weights + KV-cache bound"),
    # Full-size random weights at 32 tokens per segment: 61 / 116 / 164 / 198 / 192 MB at
    # 10 / 20 / 40 / 80 / 160 s (segments are decoded one after another: flat past one chunk's
    # encoder pass); plus one row's self-attention cache at 1024 tokens, 1024 × 8 × 2 × 384 × 4 B.
    "mr_mt3": RunMemory(200.0 + 25.0, 10.0, "bench_memory.py: random full-size weights, 10-160 s"),
    # Full-size random weights at 32 tokens per channel, the encoder on 2 segments at a time and
    # the decoder on chunks of 8: 436 / 687 / 643 MB at 10 / 40 / 160 s (all 8 segments through
    # the encoder at once, as before: 1151 MB at 40 s in the same run; 1.6-2.1 GB at 160 s). Plus the
    # self-attention cache of 256-token channels that 32 tokens do not reach:
    # 8 segments × 13 channels × 224 more tokens × 8 layers × 2 × 384 × 4 B ≈ 572 MB.
    "yourmt3": RunMemory(690.0 + 572.0, 10.0, "bench_memory.py: random full-size weights, 10-160 s"),
}


def run_mb(model_id: str, seconds: float) -> float:
    """Megabytes one run of ``model_id`` on ``seconds`` of audio needs on top of its weights
    (0 for a model outside the registry: only its weights are counted)."""
    entry = RUN_MEMORY.get(model_id)
    return entry.mb(seconds) if entry is not None else 0.0
