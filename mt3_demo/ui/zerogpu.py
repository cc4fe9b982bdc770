"""ZeroGPU Spaces: a GPU is attached per call, for at most ``duration`` seconds."""
from __future__ import annotations

import importlib.util
from typing import Any, Callable


def zero_gpu(enabled: bool) -> bool:
    """``enabled`` (``Settings.zero_gpu``: ``SPACES_ZERO_GPU``) and the ``spaces`` package is here."""
    return enabled and importlib.util.find_spec("spaces") is not None


def gpu_seconds(audio: str | None, model_ids: list[str] | None = None, *_: Any, **__: Any) -> int:
    """GPU time to ask for: a fixed start-up cost plus ~1 s per audio second per model, capped."""
    seconds = 60.0
    try:
        import soundfile as sf

        seconds = sf.info(str(audio)).duration  # header only; the real decode happens in the run
    except Exception:  # noqa: BLE001 - unknown length: ask for the default
        pass
    return int(min(300, 20 + seconds * 1.0 * max(1, len(model_ids or []))))


def on_gpu(fn: Callable, enabled: bool = False) -> Callable:
    """``spaces.GPU`` with a duration from the audio length on ZeroGPU (``enabled``:
    ``Settings.zero_gpu``); the plain function elsewhere."""
    if not zero_gpu(enabled):
        return fn
    import spaces

    return spaces.GPU(duration=gpu_seconds)(fn)
