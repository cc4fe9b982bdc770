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


# Measured with bench/bench_memory.py on the 2-core development CPU (see README "Security and
# limits"). Transkun: real weights. MT3: full-size random checkpoint, 64 tokens per segment.
RUN_MEMORY: dict[str, RunMemory] = {
    "transkun": RunMemory(1150.0, 25.0, "bench_memory.py, real weights, 20-80 s"),
    "mt3": RunMemory(60.0, 25.0, "bench_memory.py, full-size random weights, 64 tokens/segment"),
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
