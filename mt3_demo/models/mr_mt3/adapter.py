"""MR-MT3 (memory-retaining MT3, Tan et al. 2024) as a demo model — the genuine memory model.

Weights: MR-MT3's own Lightning checkpoints from the Hugging Face repo ``gudgud1014/MR-MT3`` (not
``mt3.pth`` from the same repo, which is plain MT3). Default: ``exp_segmemV2_prev_context=64_
prevaug_frame=3.ckpt`` with memory length N = 64 — the configuration the paper presents as MR-MT3
(memory block of 64 rows + prior-segment augmentation), a real memory model (N = 0 files are
MT3-equivalent). Other published files are selectable with the ``checkpoint_name`` option.

Frontend per checkpoint (docs/models.md#mr-mt3-frontends). Upstream HEAD runs every file on a torchaudio mel that
was changed in June 2024 (uncentred, 7.6 kHz top, ln with a 1e-5 floor), *after* the from-scratch
checkpoints were trained on the earlier one (centred, 8 kHz top, ln(x + 1e-6), 257 rows) — the two
differ by ≈2.3 log units on average, so HEAD feeds those weights features they never saw. Each
known file therefore defaults to the frontend it was trained with: from-scratch files
``torchaudio-legacy``, the continual file (fine-tuned from MT3) ``tf``; an unknown file gets
``torchaudio`` (what upstream test.py runs today, and what the golden fixtures were made with). The
``frontend`` option overrides. ``info["frontend"]`` says which one ran.

Load options (:class:`mt3_demo.options.MRMT3Options`): ``frontend``, ``memory_length`` (N),
``checkpoint_name`` (applied when resolving), ``precision`` ("fp32", or "fp16"/"bf16" autocast on
CUDA). Per request (:class:`mt3_demo.options.MRMT3Decode`): ``max_tokens`` (default 1023 as
upstream; at most 2047, the decoder's 2048-row position table less the start token), ``trim``
("kunato" as upstream: a segment without EOS is dropped and UNK ends a segment; or "magenta"),
``stop_at_eos``, ``batch_size`` (segments per encoder chunk), ``cuda_graphs``.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
import torch

from ...audio import Clip
from ...checkpoints import CheckpointError, Sources, local_candidates, resolve_file
from ...options import MRMT3Decode, MRMT3Options, OptionError
from ..base import AdapterOutput, ModelSpec, ProgressFn, half_dtype
from ..mt3 import features as mt3_features
from ..mt3 import vocab
from ..mt3.notes import ids_to_notes
from . import checkpoint as ck
from .frontends import Frontend
from .model import UPSTREAM_MAX_TOKENS, MRMT3, contiguous_decode

MODEL_ID = "mr_mt3"
DEFAULT = ck.known_checkpoint(ck.DEFAULT_CHECKPOINT)
UNKNOWN_FILE_FRONTEND = "torchaudio"  # upstream HEAD's


# ------------------------------------------------------------------------------------------------
# resolve: where the file is


def resolve(checkpoint: Path | None = None, options: MRMT3Options | None = None, fetch: bool = True,
            sources: Sources = Sources()) -> ck.Location:
    """The .ckpt to load: the user's file or folder; else a known file under the checkpoints root
    (the default first), or the one .ckpt in <root>/mr_mt3/; else the default file from the Hub
    (sha256-checked where known). ``options.checkpoint_name`` then picks a published file by name
    (:func:`select_by_name`)."""
    location = _find(checkpoint, fetch, sources)
    name = options.checkpoint_name if options is not None else None
    return select_by_name(location, name, fetch, sources) if name else location


def _find(checkpoint: Path | None, fetch: bool, sources: Sources) -> ck.Location:
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise CheckpointError(f"{MODEL_ID}: checkpoint path {path.name} does not exist.",
                                  "check the path (a .ckpt file, or a folder holding one).")
        return ck.find_in_folder(path) if path.is_dir() else ck.location_for_file(path)
    for known in (DEFAULT, *[k for k in ck.KNOWN_CHECKPOINTS if k is not DEFAULT]):
        for cand in local_candidates(MODEL_ID, known.name, None, sources.root):
            if cand.is_file():
                return ck.location_for_file(cand)
    root = Path(sources.root).expanduser() if sources.root is not None else None
    if root is not None and (root / MODEL_ID).is_dir() and any((root / MODEL_ID).glob("*.ckpt")):
        return ck.find_in_folder(root / MODEL_ID)  # the user's own (e.g. fine-tuned) file
    return ck.location_for_file(resolve_file(MODEL_ID, DEFAULT.name, None, DEFAULT.hub, fetch=fetch,
                                             sources=sources))


def select_by_name(location: ck.Location, name: str, fetch: bool = True,
                   sources: Sources = Sources()) -> ck.Location:
    """The named known file (and its registry entry) instead of ``location``.

    Default source or a folder: that file is looked up there (or downloaded). An explicit file
    keeps its path and takes the named entry's settings (a renamed published file).
    """
    known = ck.known_checkpoint(name)
    if known is None:
        names = ", ".join(k.name for k in ck.KNOWN_CHECKPOINTS)
        raise CheckpointError(f"{MODEL_ID}: unknown checkpoint name {name!r}.", f"use one of: {names}.")
    if location.path.name == known.name:
        return location
    override = location.override
    if override is not None and Path(override).is_file():
        return ck.Location(location.path, location.config_json, known, override)
    path = resolve_file(MODEL_ID, known.name, override, known.hub, fetch=fetch, sources=sources)
    cfg = path.parent / "config.json"
    return ck.Location(path, cfg if cfg.is_file() else None, known, override)


# ------------------------------------------------------------------------------------------------
# The transcriber


def default_frontend(location: ck.Location) -> tuple[str, str]:
    """(frontend, why): the one the known file was trained with, else upstream HEAD's."""
    if location.known is not None:
        return location.known.frontend, f"{location.known.family} checkpoint"
    return UNKNOWN_FILE_FRONTEND, "unknown checkpoint: upstream HEAD"


class MRMT3Transcriber:
    """A loaded MR-MT3: ``transcribe(clip, decode)`` → notes, raw ids per segment, and what ran.

    Segments of one clip are decoded in order (each needs the previous one's tokens).
    """

    def __init__(self, model: MRMT3, device: torch.device, frontend: str, *, checkpoint: str,
                 frontend_source: str = "", memory_length_source: str = "", precision: str = "auto"):
        self.model, self.device = model, torch.device(device)
        self.frontend, self.frontend_source = frontend, frontend_source
        self.features = Frontend(frontend, model.dims.input_dim, self.device)
        self.memory_length_source = memory_length_source
        self.checkpoint = checkpoint
        self.amp_dtype = half_dtype(precision, self.device)
        self.dtype = self.amp_dtype or torch.float32

    @property
    def memory_length(self) -> int:
        return self.model.memory_length

    def num_segments(self, clip: Clip, decode: object = None) -> int:
        return mt3_features.num_segments(len(clip.samples))

    def _amp(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def encode(self, samples, batch_size: int | None = None) -> torch.Tensor:
        """Frontend + encoder over a whole signal, ``batch_size`` segments at a time (None: by
        device) → [S, T, d]."""
        batch_size = batch_size or (64 if self.device.type == "cuda" else 16)
        x = torch.as_tensor(samples, dtype=torch.float32).to(self.device)
        total = mt3_features.num_segments(x.numel())
        out = []
        for start in range(0, total, batch_size):
            feats = self.features(x, start, start + batch_size)
            with self._amp():
                out.append(self.model.encode(feats))
        return torch.cat(out)

    def max_tokens(self, decode: MRMT3Decode) -> int:
        """The run's token limit: the request's, else upstream's; within the position table."""
        max_tokens = decode.max_tokens or UPSTREAM_MAX_TOKENS
        rows = self.model.dims.max_positions
        if max_tokens >= rows:  # the start token takes the first row
            raise OptionError(f"max_tokens must be below {rows} for MR-MT3, not {max_tokens}.")
        return max_tokens

    @torch.inference_mode()
    def transcribe(self, clip: Clip, decode: MRMT3Decode | None = None,
                   progress: ProgressFn | None = None) -> AdapterOutput:
        """Encoder over all segments, then the contiguous decode, one segment after another."""
        decode = decode or MRMT3Decode()
        max_tokens, trim = self.max_tokens(decode), vocab.Trim(decode.trim)
        t0 = time.perf_counter()
        encoded = self.encode(clip.samples, decode.batch_size)
        t1 = time.perf_counter()
        steps = [0]

        def count(_step: int, _rows: int) -> None:
            steps[0] += 1

        with self._amp():
            (segs,) = contiguous_decode(self.model, [encoded], max_tokens, on_segment=progress,
                                        on_step=count, stop_at_eos=decode.stop_at_eos,
                                        static=None if decode.cuda_graphs else False)
        t2 = time.perf_counter()
        decoded = ids_to_notes(segs, mt3_features.segment_start_times(len(segs)), trim=trim)
        info = {
            "frontend": self.frontend,
            "frontend_source": self.frontend_source,
            "memory_length": self.memory_length,
            "memory_length_source": self.memory_length_source,
            "checkpoint": self.checkpoint,
            "trim": trim.value,
            "max_tokens": max_tokens,
            "segments": len(segs),
            "segments_without_eos": sum(1 for g in segs if not g or g[-1] != vocab.EOS),
            "invalid_events": decoded.invalid_events,
            "dropped_events": decoded.dropped_events,
            "stage_timings": {"frontend_encoder_s": round(t1 - t0, 4), "decode_s": round(t2 - t1, 4),
                              "decode_steps": steps[0], "tokens": sum(len(g) for g in segs),
                              },
        }
        return AdapterOutput(notes=decoded.notes, tokens=segs, info=info)


def build(location: ck.Location, device: torch.device | str = "cpu",
          options: MRMT3Options | None = None) -> MRMT3Transcriber:
    """Load the resolved checkpoint strictly and settle N and the frontend (module docstring)."""
    options = options or MRMT3Options()
    frontend, why = default_frontend(location)
    if options.frontend is not None:
        frontend, why = options.frontend, "user"
    loaded = ck.load_model(location, options.memory_length)
    device = torch.device(device)
    return MRMT3Transcriber(loaded.model.to(device), device, frontend, checkpoint=location.name,
                            frontend_source=why, memory_length_source=loaded.memory_length_source,
                            precision=options.precision)


SPEC = ModelSpec(
    id=MODEL_ID,
    display_name="MR-MT3 (memory-retaining)",
    description=("MT3 with a memory block (Tan et al. 2024): each 2-second segment also attends to an "
                 "encoding of the tokens generated for the previous segment, which reduces instrument "
                 "leakage. Runs MR-MT3's own checkpoints, segments in order."),
    source=f"{DEFAULT.hub.url} (MR-MT3's Lightning checkpoints; other files by checkpoint name)",
    licence="MIT (gudgud96/MR-MT3)",
    instruments="Multi-instrument (trained on Slakh2100): piano, guitar, bass, strings, winds, synths, drums",
    size_mb=194.1,  # float32 weights; the .ckpt files are ~3x that (AdamW moments, not loaded)
    options_type=MRMT3Options,
    decode_type=MRMT3Decode,
    resolve=resolve,
    build=build,
    paper_url="https://arxiv.org/abs/2403.10024",
    published=lambda location, options: (getattr(location, "known", None) or DEFAULT).hub,
)
