"""MT3 (Magenta's official multi-instrument weights, kunato/mt3-pytorch layout) as a demo model.

Checkpoint: ``mt3.pth`` (+ ``config.json``) from a local folder, or ``mt3.pth`` from the Hugging Face
model repo gudgud1014/MR-MT3 (sha256-verified). Loaded strictly with ``torch.load(weights_only=True)``.
Without a ``config.json`` the dims are read off the tensors' shapes (heads: the published 6).

``MT3Options.compat`` (a load option: it sets the position table):
* "magenta" (default): what the weights were trained with — Magenta's position frequencies
  10000^(−i/(d/2−1)) recomputed at load, the training-era log floor (clamp below 1e-5), Magenta's
  trimming (a segment without EOS is kept, UNK is an invalid token), up to 1024 tokens.
* "kunato": reproduces the kunato port bit for bit — the checkpoint's stored ``inv_freq``, log floor
  only for x ≤ 0, kunato's trimming (UNK ends a segment, a segment without EOS is dropped), up to
  1023 tokens. The golden fixtures follow this mode.

Per request (:class:`mt3_demo.options.MT3Decode`): ``max_tokens`` and ``trim`` (None: the compat
mode's), ``stop_at_eos``, ``batch_size``, ``cuda_graphs``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...audio import Clip
from ...checkpoints import (CheckpointError, HubFile, Sources, check_tensors, checkpoint_errors, empty_weights,
                             resolve_file, safe_torch_load)
from ...options import MT3_COMPAT_MODES, MT3Decode, MT3Options, OptionError
from ..base import AdapterOutput, ModelSpec, ProgressFn, half_dtype
from ..t5 import T5, dims_from_state_dict, load_t5_state_dict
from . import features, vocab
from .decoding import DEFAULT_MAX_TOKENS, Timings, generate_ids
from .notes import ids_to_notes
from .shapes import t5_config_from_shapes

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
CONFIG_KEYS = ("d_model", "num_heads", "d_kv", "d_ff", "num_layers", "vocab_size")


@dataclass(frozen=True)
class CompatSettings:
    positions: str  # SinusoidalPositions formula
    log_floor: str  # features.LOG_FLOORS
    trim: vocab.Trim  # the default trimming rule (MT3Decode.trim overrides)
    max_tokens: int  # the default token limit (MT3Decode.max_tokens overrides)


COMPAT = {
    "magenta": CompatSettings(positions="magenta", log_floor="clamp", trim=vocab.Trim.MAGENTA,
                              max_tokens=DEFAULT_MAX_TOKENS),
    "kunato": CompatSettings(positions="checkpoint", log_floor="zero", trim=vocab.Trim.KUNATO,
                             max_tokens=DEFAULT_MAX_TOKENS - 1),
}
assert set(COMPAT) == set(MT3_COMPAT_MODES)


@dataclass(frozen=True)
class MT3Location:
    weights: Path
    config: Path | None = None  # config.json beside the weights, when there is one


def resolve(checkpoint: Path | None = None, options: MT3Options | None = None, fetch: bool = True,
            sources: Sources = Sources()) -> MT3Location:
    """Find mt3.pth (a file, or a folder holding it; else the checkpoints root; else the Hub) and
    the config.json beside it, if any. Only looks: a missing config is inferred at load time."""
    weights = resolve_file(MODEL_ID, WEIGHTS, Path(checkpoint) if checkpoint is not None else None, HUB,
                           fetch=fetch, sources=sources)
    cfg_path = weights.parent / CONFIG
    return MT3Location(weights, cfg_path if cfg_path.is_file() else None)


def read_config(location: MT3Location, state: dict[str, torch.Tensor], what: str) -> dict[str, Any]:
    """config.json when the folder has one, else the dims read off the state dict's shapes (with
    the published 6 heads, which no shape records) — in memory, nothing is written."""
    if location.config is None:
        return t5_config_from_shapes(state, what)
    try:
        config = json.loads(location.config.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{MODEL_ID}: {CONFIG} beside {location.weights.name} could not be read "
                              f"({type(e).__name__}).") from e  # OSError's text holds the full path
    missing = [k for k in CONFIG_KEYS if not isinstance(config, dict) or k not in config]
    if missing:
        raise CheckpointError(f"{MODEL_ID}: {CONFIG} beside {location.weights.name} lacks {', '.join(missing)}.")
    return config


def load_model(location: MT3Location, device: torch.device | str = "cpu", positions: str = "magenta") -> T5:
    """Build the T5 from config.json (or the checkpoint's shapes), load strictly, move to ``device``."""
    what = f"MT3 checkpoint {location.weights.name}"
    state = safe_torch_load(location.weights)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{what} is not a plain state_dict of tensors (kunato's mt3.pth layout).")
    check_tensors(state, what)
    with checkpoint_errors(what):
        try:
            dims = dims_from_state_dict(read_config(location, state, what), state)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{what}: config.json is incomplete ({e}).") from e
        with empty_weights():  # no random init: the checkpoint's tensors become the parameters
            model = T5(dims)
        state = {k: v.float() for k, v in state.items()}
        load_t5_state_dict(model, state, what, assign=True)
        model.set_position_formula(positions)
    return model.eval().to(device)


class MT3Transcriber:
    """A loaded MT3: ``transcribe(clip, decode)`` → notes, raw ids per segment, and decoding facts."""

    def __init__(self, model: T5, device: torch.device, options: MT3Options):
        self.model, self.device, self.compat = model, torch.device(device), options.compat
        self.settings = COMPAT[options.compat]
        self.amp_dtype = half_dtype(options.precision, self.device)
        self.dtype = self.amp_dtype or torch.float32
        self.frontend = features.LogMel(model.dims.input_dim, self.settings.log_floor, self.device)

    def max_tokens(self, decode: MT3Decode) -> int:
        """The run's token limit: the request's, else the compat mode's; below the position table."""
        max_tokens = decode.max_tokens or self.settings.max_tokens
        if max_tokens >= self.model.dims.max_positions:
            raise OptionError(f"max_tokens must be below {self.model.dims.max_positions} for MT3, not {max_tokens}.")
        return max_tokens

    def num_segments(self, clip: Clip, decode: object = None) -> int:
        return features.num_segments(len(clip.samples))

    def transcribe(self, clip: Clip, decode: MT3Decode | None = None,
                   progress: ProgressFn | None = None) -> AdapterOutput:
        decode = decode or MT3Decode()
        max_tokens = self.max_tokens(decode)
        trim = vocab.Trim(decode.trim) if decode.trim is not None else self.settings.trim
        timings = Timings()
        ids = generate_ids(self.model, self.frontend, clip.samples, max_tokens=max_tokens,
                           batch_size=decode.batch_size, amp_dtype=self.amp_dtype, progress=progress,
                           timings=timings, stop_at_eos=decode.stop_at_eos,
                           static=None if decode.cuda_graphs else False,
                           static_first=decode.static_cache_start)
        starts = features.segment_start_times(len(ids))
        decoded = ids_to_notes(ids, starts, trim=trim)
        info = {
            "compat": self.compat,
            "positions": self.settings.positions,
            "log_floor": self.settings.log_floor,
            "trim": trim.value,
            "max_tokens": max_tokens,
            "segments": len(ids),
            "segments_without_eos": sum(1 for g in ids if not g or g[-1] != vocab.EOS),
            "invalid_events": decoded.invalid_events,
            "dropped_events": decoded.dropped_events,
            "stage_timings": timings.as_dict(),
        }
        return AdapterOutput(notes=decoded.notes, tokens=ids, info=info)


def build(location: MT3Location, device: torch.device | str = "cpu", options: MT3Options | None = None) -> MT3Transcriber:
    """Load the resolved checkpoint with the positions of the options' compat mode."""
    options = options or MT3Options()
    device = torch.device(device)
    model = load_model(location, device, COMPAT[options.compat].positions)
    return MT3Transcriber(model, device, options)


SPEC = ModelSpec(
    id=MODEL_ID,
    display_name="MT3 (Magenta)",
    description=("Google Magenta's multi-task multitrack transcription model (T5, 46 M parameters): "
                 "one encoder-decoder turns 2-second log-mel segments into MIDI-like tokens for "
                 "any mix of instruments, drums included."),
    source=f"{HUB.url} (kunato/mt3-pytorch conversion of the official Magenta checkpoint)",
    licence="Apache-2.0 (magenta/mt3)",
    instruments="Multi-instrument: piano, guitar, bass, strings, winds, synths, drums (General MIDI programs)",
    size_mb=HUB.size_bytes / 1e6,
    options_type=MT3Options,
    decode_type=MT3Decode,
    resolve=resolve,
    build=build,
    paper_url="https://arxiv.org/abs/2111.03017",
    published=lambda location, options: HUB,
)
