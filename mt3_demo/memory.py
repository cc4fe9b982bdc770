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
    # Full-size random weights: 109 / 340 / 340 MB at 20 / 60 / 120 s decoding 64 tokens per
    # segment (chunks of 30 segments, sized for 256-token rows within the 448 MB decode budget);
    # 526 MB at 60 s decoding 384 tokens per segment, where every row outgrows what the chunk was
    # sized for and the decoder sets rows aside to stay within the budget. Longer rows cannot go
    # further past it than one row's cache at 1024 tokens (25 MB, of which 384 tokens already hold
    # 9): 526 + 16, rounded up. Per minute: the 16 kHz signal and its features (< 10 MB).
    "mt3": RunMemory(550.0, 10.0, "bench_memory.py: random full-size weights, 64 and 384 tokens"),
    # Full-size random weights at 32 tokens per segment: 61 / 116 / 164 / 198 / 192 MB at
    # 10 / 20 / 40 / 80 / 160 s (segments are decoded one after another: flat past one chunk's
    # encoder pass; re-measured with the one-copy load: 59 / 171 / 207 MB at 10 / 40 / 160 s);
    # plus one row's self-attention cache at 1024 tokens, 1024 × 8 × 2 × 384 × 4 B (a 10 s clip
    # decoded to 1023 tokens per segment peaked at 52 MB: within the noise of the table above).
    "mr_mt3": RunMemory(200.0 + 25.0, 10.0, "bench_memory.py: random full-size weights, 10-160 s"),
    # Full-size random weights, the encoder on 2 segments at a time and the decoder on chunks of
    # 8: at 32 tokens per channel 436 / 687 / 643 MB at 10 / 40 / 160 s with 128-position first
    # cache blocks, 539 MB at 40 s with 16-position ones (all 8 segments through the encoder at
    # once, as before: 1151 MB at 40 s; 1.6-2.1 GB at 160 s). With every channel decoding to its
    # 256-token limit, the worst case: 746 MB at 40 s (the caches may grow by CACHE_GROWTH_MB past
    # their first block, channels that do not fit wait; 1161 MB when they all grew at once).
    # Flat past one chunk.
    "yourmt3": RunMemory(760.0, 10.0, "bench_memory.py: random full-size weights, 32 and 256 tokens"),
}


def run_mb(model_id: str, seconds: float) -> float:
    """Megabytes one run of ``model_id`` on ``seconds`` of audio needs on top of its weights
    (0 for a model outside the registry: only its weights are counted)."""
    entry = RUN_MEMORY.get(model_id)
    return entry.mb(seconds) if entry is not None else 0.0
