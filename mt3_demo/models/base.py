"""The small protocol every transcription model implements, and its registry entry.

An adapter is resolved once by ``ModelSpec.resolve``, built by ``ModelSpec.build(location, device,
options)`` and then only asked to ``transcribe`` clips. The manager owns loading, timing, caching and unloading; adapters own nothing
but their weights and their inference code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ..audio import Clip
from ..notes import Note

# progress(done_segments, total_segments)
ProgressFn = Callable[[int, int], None]


@dataclass
class AdapterOutput:
    """What an adapter returns: notes, optionally the raw ids per segment, and model-specific facts."""

    notes: list[Note]
    tokens: list | None = None
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Transcriber(Protocol):
    """A loaded model, ready to transcribe."""

    device: torch.device
    dtype: torch.dtype

    def num_segments(self, clip: Clip) -> int:
        """How many segments ``transcribe`` will walk for this clip (for progress bars)."""
        ...

    def transcribe(self, clip: Clip, progress: ProgressFn | None = None) -> AdapterOutput:
        """Transcribe ``clip.samples`` (16 kHz mono float32) into notes."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what the UI shows about a model, and how to get it running.

    ``resolve(checkpoint, options, fetch)`` finds the weights and returns a location (a path, or a
    small dataclass with the path and what is known about it), or raises ``CheckpointError`` with
    a message that says how to fix it. ``checkpoint`` is the user's override (a file or folder), or
    None for the default source; ``fetch=False`` never downloads (raises ``NotDownloaded`` instead)
    and, like every resolution, writes nothing. ``build(location, device, options)`` loads that
    location and returns a :class:`Transcriber`; it never resolves again. ``options`` is an
    instance of ``options_type`` (``mt3_demo.options``), validated when it was made.
    """

    id: str
    display_name: str
    description: str
    source: str  # where the weights come from, in words (repo, file)
    licence: str
    instruments: str  # what it transcribes, in words
    size_mb: float  # approximate weights size, for the memory budget
    options_type: type
    resolve: Callable[[Path | None, Any, bool], Any]
    build: Callable[[Any, torch.device, Any], Transcriber]
    paper_url: str = ""
