"""The small protocol every transcription model implements, and its registry entry.

An adapter is resolved once by ``ModelSpec.resolve``, built by ``ModelSpec.build(location, device,
options)`` with its load options and then only asked to ``transcribe(clip, decode, progress)``
with per-request decode options. The manager owns loading, timing, caching and unloading;
adapters own nothing but their weights and their inference code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ..audio import Clip
from ..checkpoints import HubFile, Sources
from ..notes import Note

def ieee_float32_convolutions() -> None:
    """Make cuDNN compute float32 convolutions in float32 (process-wide).

    By default PyTorch lets cuDNN run them in TF32 (a 10-bit mantissa): on an H200 that changed 6
    of YourMT3+'s 26 greedy id rows on its fixture at "fp32" (bench/bench_cuda.py). fp32 here means
    what the parity tests check: IEEE float32. Matrix products already default to IEEE.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        conv.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False


# Precision names (options.PRECISIONS) -> the dtype a CUDA run computes in; None: float32.
# "auto" is full precision: greedy argmax paths are sensitive to rounding. The CPU is always float32.
_HALF = {"auto": None, "fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def half_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The half-precision dtype of a validated precision on ``device`` (None: float32). The one
    place a precision name becomes a dtype, for every adapter."""
    return _HALF[precision] if torch.device(device).type == "cuda" else None


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

    def num_segments(self, clip: Clip, decode: Any = None) -> int:
        """How many segments ``transcribe`` will walk for this clip with ``decode`` (progress bars)."""
        ...

    def transcribe(self, clip: Clip, decode: Any = None, progress: ProgressFn | None = None) -> AdapterOutput:
        """Transcribe ``clip.samples`` (16 kHz mono float32) into notes with ``decode`` (an
        instance of the spec's ``decode_type``; None: its defaults)."""
        ...


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what the UI shows about a model, and how to get it running.

    ``resolve(checkpoint, options, fetch, sources)`` finds the weights and returns a location (a
    path, or a small dataclass with the path and what is known about it), or raises
    ``CheckpointError`` with its reason and fix. ``checkpoint`` is the user's override (a file or
    folder), or None for the default source; ``fetch=False`` never downloads (raises
    ``NotDownloaded`` instead) and, like every resolution, writes nothing; ``sources`` says where
    checkpoints placed by hand are and whether the Hub may be asked
    (:class:`~mt3_demo.checkpoints.Sources`). ``build(location, device, options)`` loads that
    location and returns a :class:`Transcriber`; it never resolves again. ``options`` is an
    instance of ``options_type`` (``mt3_demo.options``: what needs a reload), validated when it was
    made; ``decode_type`` is the per-request options' class the transcriber takes.
    ``size_mb`` is the weights' size in memory; the download size is the published file's
    (``HubFile.size_bytes``), the one number the UI quotes.
    """

    id: str
    display_name: str
    description: str
    source: str  # where the weights come from, in words (repo, file)
    licence: str
    instruments: str  # what it transcribes, in words
    size_mb: float  # approximate weights size, for the memory budget
    options_type: type
    decode_type: type
    resolve: Callable[[Path | None, Any, bool, Sources], Any]
    build: Callable[[Any, torch.device, Any], Transcriber]
    paper_url: str = ""
    # The published file that ``resolve``'s location stands for (its sha256 and size), given the
    # location and the options; None for weights that ship with a package. The UI says "official
    # weights" only when the file's hash is this file's.
    published: Callable[[Any, Any], HubFile | None] = lambda location, options: None
    # For weights that ship with a package (``published`` None): whether ``resolve``'s location is
    # that package's own; a folder placed by hand is "your checkpoint", not the package's weights.
    packaged: Callable[[Any], bool] = lambda location: True
