"""MT3 (Magenta's official multi-instrument weights, kunato/mt3-pytorch layout) as a demo model.

Checkpoint: ``mt3.pth`` (+ ``config.json``) from a local folder, or ``mt3.pth`` from the Hugging Face
model repo gudgud1014/MR-MT3 (sha256-verified). Loaded strictly with ``torch.load(weights_only=True)``.

``compat`` option:
* "magenta" (default): what the weights were trained with — Magenta's position frequencies
  10000^(−i/(d/2−1)) recomputed at load, the training-era log floor (clamp below 1e-5), Magenta's
  trimming (a segment without EOS is kept, UNK is an invalid token), up to 1024 tokens.
* "kunato": reproduces the kunato port bit for bit — the checkpoint's stored ``inv_freq``, log floor
  only for x ≤ 0, kunato's trimming (UNK ends a segment, a segment without EOS is dropped), up to
  1023 tokens. The golden fixtures follow this mode.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...audio import Clip
from ...checkpoints import (CheckpointError, HubFile, check_tensors, checkpoint_errors, resolve_file,
                             safe_torch_load)
from ..base import AdapterOutput, ModelSpec, ProgressFn
from ..t5 import T5, dims_from_state_dict, load_t5_state_dict
from . import features, vocab
from .decoding import AMP_DTYPES, DEFAULT_MAX_TOKENS, Timings, generate_ids
from .notes import ids_to_notes

MODEL_ID = "mt3"
WEIGHTS = "mt3.pth"
CONFIG = "config.json"
HUB = HubFile(
    repo_id="gudgud1014/MR-MT3",
    filename="mt3.pth",
    revision="main",  # no commit sha is published in the specs
    sha256="b8a3807ed265059abd25ad7f68142c06c35e8f6144dcaa45bd55946a3745398f",
    size_bytes=183_672_643,
)
# kunato's pretrained/config.json (= Magenta's gin/model.gin), used when the folder has none.
KNOWN_CONFIG: dict[str, Any] = {
    "architectures": ["T5ForConditionalGeneration"],
    "d_ff": 1024, "d_kv": 64, "d_model": 512, "decoder_start_token_id": 0, "dropout_rate": 0.1,
    "pad_token_id": 0, "eos_token_id": 1, "unk_token_id": 2, "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0, "is_encoder_decoder": True, "layer_norm_epsilon": 1e-06,
    "model_type": "t5", "num_heads": 6, "num_decoder_layers": 8, "num_layers": 8,
    "output_past": True, "tie_word_embeddings": False, "vocab_size": 1536,
}
COMPAT_MODES = ("magenta", "kunato")


@dataclass(frozen=True)
class CompatSettings:
    positions: str  # SinusoidalPositions formula
    log_floor: str  # features.LOG_FLOORS
    trim: str  # notes.ids_to_notes trim rule
    max_tokens: int


COMPAT = {
    "magenta": CompatSettings(positions="magenta", log_floor="clamp", trim="magenta", max_tokens=DEFAULT_MAX_TOKENS),
    "kunato": CompatSettings(positions="checkpoint", log_floor="zero", trim="kunato", max_tokens=DEFAULT_MAX_TOKENS - 1),
}


@dataclass(frozen=True)
class MT3Location:
    weights: Path
    config: dict[str, Any]


def resolve(checkpoint: Path | None = None) -> MT3Location:
    """Find mt3.pth (a file, or a folder holding it; else $MT3_DEMO_CHECKPOINTS; else the Hub).

    config.json next to the weights is used when present; otherwise the known values are used and
    written there (best effort) so the folder matches kunato's layout.
    """
    weights = resolve_file(MODEL_ID, WEIGHTS, Path(checkpoint) if checkpoint is not None else None, HUB)
    cfg_path = weights.parent / CONFIG
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{MODEL_ID}: {cfg_path} is not valid JSON ({e}).") from e
        missing = [k for k in ("d_model", "num_heads", "d_kv", "d_ff", "num_layers", "vocab_size") if k not in config]
        if missing:
            raise CheckpointError(f"{MODEL_ID}: {cfg_path} lacks {', '.join(missing)}.")
    else:
        config = dict(KNOWN_CONFIG)
        try:
            cfg_path.write_text(json.dumps(config, indent=2))
        except OSError:
            pass  # read-only folder: the values are known anyway
    return MT3Location(weights, config)


def load_model(location: MT3Location, device: torch.device | str = "cpu", positions: str = "magenta") -> T5:
    """Build the T5 from config.json and the checkpoint's shapes, load strictly, move to ``device``."""
    what = f"MT3 checkpoint {location.weights.name}"
    state = safe_torch_load(location.weights)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{what} is not a plain state_dict of tensors (kunato's mt3.pth layout).")
    check_tensors(state, what)
    with checkpoint_errors(what):
        try:
            dims = dims_from_state_dict(location.config, state)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{what}: config.json is incomplete ({e}).") from e
        with torch.device("meta"):  # no random init: the checkpoint's tensors become the parameters
            model = T5(dims)
        state = {k: v.float() for k, v in state.items()}
        load_t5_state_dict(model, state, what, assign=True)
        model.set_position_formula(positions)
    return model.eval().to(device)


class MT3Transcriber:
    """A loaded MT3: ``transcribe(clip)`` → notes, raw ids per segment, and decoding facts."""

    def __init__(self, model: T5, device: torch.device, compat: str = "magenta",
                 max_tokens: int | None = None, batch_size: int | None = None, precision: str = "fp32"):
        self.model, self.device, self.compat = model, torch.device(device), compat
        self.settings = COMPAT[compat]
        self.max_tokens = int(max_tokens) if max_tokens else self.settings.max_tokens
        self.batch_size = batch_size
        self.amp_dtype = AMP_DTYPES[precision] if self.device.type == "cuda" else None
        self.dtype = self.amp_dtype or torch.float32
        self.frontend = features.LogMel(model.dims.input_dim, self.settings.log_floor, self.device)

    def num_segments(self, clip: Clip) -> int:
        return features.num_segments(len(clip.samples))

    def transcribe(self, clip: Clip, progress: ProgressFn | None = None) -> AdapterOutput:
        timings = Timings()
        ids = generate_ids(self.model, self.frontend, clip.samples, max_tokens=self.max_tokens,
                           batch_size=self.batch_size, amp_dtype=self.amp_dtype, progress=progress,
                           timings=timings)
        starts = features.segment_start_times(len(ids))
        decoded = ids_to_notes(ids, starts, trim=self.settings.trim)
        info = {
            "compat": self.compat,
            "positions": self.settings.positions,
            "log_floor": self.settings.log_floor,
            "trim": self.settings.trim,
            "max_tokens": self.max_tokens,
            "segments": len(ids),
            "segments_without_eos": sum(1 for g in ids if not g or g[-1] != vocab.EOS),
            "invalid_events": decoded.invalid_events,
            "dropped_events": decoded.dropped_events,
            "stage_timings": timings.as_dict(),
        }
        return AdapterOutput(notes=decoded.notes, tokens=ids, info=info)


def build(location: MT3Location, device: torch.device | str = "cpu", options: dict[str, Any] | None = None) -> MT3Transcriber:
    """Options: compat ("magenta" | "kunato"), max_tokens, batch_size, precision ("auto" = "fp32" |
    "fp16" | "bf16", CUDA only). Unknown keys are ignored; None means the default."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    compat = options.get("compat", "magenta")
    if compat not in COMPAT_MODES:
        raise ValueError(f"mt3: compat must be one of {', '.join(COMPAT_MODES)}, not {compat!r}")
    precision = options.get("precision", "auto")
    if precision == "auto":  # full precision: greedy argmax paths are sensitive to rounding
        precision = "fp32"
    if precision not in AMP_DTYPES:
        raise ValueError(f"mt3: precision must be one of {', '.join(AMP_DTYPES)}, not {precision!r}")
    device = torch.device(device)
    model = load_model(location, device, COMPAT[compat].positions)
    return MT3Transcriber(model, device, compat, options.get("max_tokens"), options.get("batch_size"), precision)


SPEC = ModelSpec(
    id=MODEL_ID,
    display_name="MT3 (Magenta, official weights)",
    description=("Google Magenta's multi-task multitrack transcription model (T5, 46 M parameters): "
                 "one encoder-decoder turns 2-second log-mel segments into MIDI-like tokens for "
                 "any mix of instruments, drums included."),
    source=f"{HUB.url} (kunato/mt3-pytorch conversion of the official Magenta checkpoint)",
    licence="Apache-2.0 (magenta/mt3)",
    instruments="Multi-instrument: piano, guitar, bass, strings, winds, synths, drums (General MIDI programs)",
    size_mb=HUB.size_bytes / 1e6,
    resolve=resolve,
    build=build,
    paper_url="https://arxiv.org/abs/2111.03017",
    options={"compat": "magenta", "max_tokens": None},
)
