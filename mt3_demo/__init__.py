"""mt3-demo: run the MT3 family of music-transcription models side by side.

Public API (the package never imports Gradio): ``load_clip``, ``list_models``, ``transcribe``,
``compare_models``; each model's decode options (per request, never a reload) in
``mt3_demo.options``::

    from mt3_demo import load_clip, list_models, transcribe
    from mt3_demo.options import MT3Decode
    clip = load_clip("song.wav")
    result = transcribe(clip, "transkun")        # -> Transcription (notes, timings)
    result = transcribe(clip, "mt3", decode=MT3Decode(max_tokens=256))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .audio import AudioError, Clip, load_clip
from .checkpoints import CheckpointError
from .manager import get_manager
from .notes import Note, Transcription, write_midi
from .pipeline import run_models
from .results import Run

__version__ = "0.1.0"
__all__ = ["AudioError", "CheckpointError", "Clip", "Note", "Run", "Transcription", "compare_models", "list_models",
           "load_clip", "transcribe", "write_midi"]


def list_models() -> dict[str, str]:
    """Model id → availability status ("ready", "download" or "unavailable")."""
    manager = get_manager()
    return {m: manager.availability(m).status for m in manager.model_ids()}


def transcribe(clip: Clip, model_id: str = "transkun", decode: Any = None) -> Transcription:
    """Transcribe a clip with one model, through the shared (warm) model manager; ``decode``: the
    model's decode options (``mt3_demo.options.<Model>Decode``, or a dict of its fields)."""
    return get_manager().transcribe(model_id, clip, decode)


def compare_models(clip: Clip, model_ids: list[str], out_dir, reference: list[Note] | None = None,
                   decode: Mapping[str, Any] | None = None) -> Run:
    """Run several models, write every file into ``out_dir``; returns the :class:`Run`.
    ``decode`` maps a model id to its decode options."""
    return run_models(clip, model_ids, get_manager(), Path(out_dir), reference=reference, decode=decode)
