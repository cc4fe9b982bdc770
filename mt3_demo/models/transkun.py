"""The embedded default: Transkun (Yan, Cwitkowitz & Duan), a piano transcriber whose weights ship
inside its PyPI wheel — so a fresh offline machine transcribes for real with no download.

We use only its model class and its pretrained files; audio loading, resampling, notes and MIDI are
ours. It works at 44.1 kHz, so it resamples from the decoded original (not from the 16 kHz array).
"""
from __future__ import annotations

import copy
import importlib.resources
import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import Clip
from ..checkpoints import CheckpointError, Sources, check_tensors, checkpoint_errors, load_strict, safe_torch_load
from ..notes import Note
from ..options import TranskunDecode, TranskunOptions
from .base import AdapterOutput, ModelSpec, ProgressFn

MODEL_ID = "transkun"
WEIGHTS, CONFIG = "2.0.pt", "2.0.conf"
# The one model class a .conf may name (moduleconf's "module" / "configClassName" fields).
MODEL_MODULE, CONFIG_CLASS = "transkun.ModelTransformer", "Config"
# Each number of a .conf within bounds (inclusive): the 2.0 model's values fit with room for other
# trainings, and the largest model they allow stays small enough to build before its weights are
# checked against it (docs/security.md) — nLayers = 1e6 no longer allocates until memory runs out.
CONFIG_BOUNDS: dict[str, tuple[float, float]] = {
    "fs": (8000, 96000), "hopSize": (64, 8192), "windowSize": (64, 16384), "f_min": (0, 48000),
    "f_max": (1, 48000), "n_mels": (1, 256), "segmentSizeInSecond": (1, 60), "segmentHopSizeInSecond": (0.1, 60),
    "nExtraWins": (0, 16), "baseSize": (1, 96), "posEmbedInitGamma": (0, 100), "nHead": (1, 16),
    "fourierSize": (1, 128), "nLayers": (1, 12), "hiddenFactorAttn": (1, 2), "hiddenFactor": (1, 4),
    "velocityPredictorHiddenSize": (1, 1024), "refinedOFPredictorHiddenSize": (1, 1024),
    "scoringExpansionFactor": (1, 4), "scoreDropoutProb": (0, 1), "contextDropoutProb": (0, 1),
    "velocityDropoutProb": (0, 1), "refinedOFDropoutProb": (0, 1),
}
# A segment's semi-CRF scores are [frames, frames, tracks]: 689 frames for the 2.0 model's 16 s.
MAX_SEGMENT_FRAMES = 2048
MAX_CONFIG_BYTES = 64 * 1024  # the 2.0 .conf is 1 KB; nothing is parsed of a bigger file
# Pitch tracks (of 90: 88 keys + 2 pedals) scored and decoded together. The wheel scores all 90 at
# once: a [frames, frames, 90] float32 matrix, 172 MB for a 16 s segment (691 frames), built through
# full-size temporaries (+0.6 GB measured in the scorer) and copied transposed by the decoder
# (+0.17 GB). Tracks are independent in the semi-CRF, so groups of 10 give the same paths from
# 19 MB matrices.
TRACKS_PER_GROUP = 10


def resolve(checkpoint: Path | None = None, options: TranskunOptions | None = None, fetch: bool = True,
            sources: Sources = Sources()) -> Path:
    """The folder holding 2.0.pt + 2.0.conf: the user's (``checkpoint``), else ``<root>/transkun/``
    of ``sources`` as for every model (``$MT3_DEMO_CHECKPOINTS``, ``compare --checkpoints``) when it
    holds either file, else the one inside the installed wheel. Nothing is downloaded (``fetch``
    does not apply)."""
    placed = Path(sources.root).expanduser() / MODEL_ID if sources.root is not None else None
    if checkpoint is not None:
        folder = Path(checkpoint).expanduser()
        folder = folder.parent if folder.is_file() else folder
    elif placed is not None and _holds_a_file(placed):
        folder = placed
    else:  # nothing placed by hand: the weights every install has
        folder = wheel_folder()
    for name in (WEIGHTS, CONFIG):
        if not (folder / name).is_file():
            raise CheckpointError(f"transkun: {name} not found in {folder.name}/.",
                                  f"put {WEIGHTS} and {CONFIG} together in that folder.")
    return folder


def wheel_folder() -> Path:
    """The pretrained folder inside the installed transkun wheel."""
    try:
        return Path(str(importlib.resources.files("transkun") / "pretrained"))
    except ModuleNotFoundError as e:
        raise CheckpointError("transkun: the 'transkun' package is not installed.",
                              "run `pip install -r requirements.txt`.") from e


def packaged(folder: Path) -> bool:
    """Whether ``folder`` (``resolve``'s location) is the installed wheel's own: its weights are
    then "from its pip package", any other folder's are the user's."""
    return Path(folder).resolve() == wheel_folder().resolve()


def _holds_a_file(folder: Path) -> bool:
    """A folder placed by hand counts once it holds either file (a half-placed model is an error
    naming the missing one, not a silent fall back to the wheel's weights)."""
    return any((folder / name).is_file() for name in (WEIGHTS, CONFIG))


def _plausible(key: str, value: Any, default: Any) -> str | None:
    """Why a .conf value may not replace a setting (None: it may). Only plain values of the
    setting's own kind — whole numbers where the setting is one — within ``CONFIG_BOUNDS``."""
    kind = type(default).__name__
    if isinstance(default, bool) or isinstance(value, bool):
        return None if isinstance(value, bool) and isinstance(default, bool) else f"is not a plausible {kind}"
    if isinstance(default, (int, float)):
        whole = isinstance(default, int)
        if not isinstance(value, int if whole else (int, float)) or not math.isfinite(value):
            return f"is not a plausible {kind}" + (" (a whole number)" if whole else "")
        lo, hi = CONFIG_BOUNDS.get(key, (0, 1_000_000))
        return None if lo <= value <= hi else f"is not a plausible {kind} (allowed {lo:g} to {hi:g})"
    if isinstance(default, list):
        ok = isinstance(value, list) and len(value) <= 16 and all(isinstance(v, str) and len(v) <= 16 for v in value)
        return None if ok else f"is not a plausible {kind}"
    return None if isinstance(value, type(default)) else f"is not a plausible {kind}"


def _consistent(config: Any) -> str | None:
    """Why the settings do not fit together (None: they do) — each alone was within bounds."""
    if not config.f_min < config.f_max <= config.fs / 2:
        return f"f_min = {config.f_min} and f_max = {config.f_max} must satisfy f_min < f_max <= fs / 2"
    if config.windowSize < config.hopSize:
        return f"windowSize = {config.windowSize} is shorter than hopSize = {config.hopSize}"
    if config.segmentHopSizeInSecond > config.segmentSizeInSecond:
        return "segmentHopSizeInSecond is longer than segmentSizeInSecond"
    frames = config.segmentSizeInSecond * config.fs / config.hopSize
    if frames > MAX_SEGMENT_FRAMES:
        return (f"a segment of {config.segmentSizeInSecond:g} s at fs = {config.fs} and hopSize = {config.hopSize} "
                f"is {frames:.0f} frames, over {MAX_SEGMENT_FRAMES}")
    return None


CONF_FIX = f"use the {CONFIG} that came with the weights (its values are listed in docs/security.md)."


def read_config(path: Path) -> Any:
    """``2.0.conf`` → Transkun's model config object, importing nothing the file names.

    moduleconf (Transkun's own reader) imports the file's ``module`` and calls its
    ``configClassName``: a crafted .conf in a user's folder could import any installed module and
    call any of its attributes. We accept only Transkun's model and copy plain values of the kinds
    its config class defines, each within its bounds, into a fresh instance.
    """
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"transkun: {path.name} is {size:,} bytes; a model .conf is about 1 KB "
                                  f"(at most {MAX_CONFIG_BYTES:,} accepted).", CONF_FIX)
        conf = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise CheckpointError(f"transkun: {path.name} nests its values too deeply to be a model .conf.",
                              CONF_FIX) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"transkun: {path.name} is not valid JSON ({type(e).__name__}).", CONF_FIX) from None
    section = conf.get("Model") if isinstance(conf, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("config"), dict):
        raise CheckpointError(f"transkun: {path.name} has no \"Model\" section with a \"config\" object.",
                              CONF_FIX)
    named = (section.get("module"), section.get("configClassName", CONFIG_CLASS))
    if named != (MODEL_MODULE, CONFIG_CLASS):
        raise CheckpointError(f"transkun: {path.name} names module {str(named[0])[:80]!r} and class "
                              f"{str(named[1])[:80]!r}; only Transkun's own model ({MODEL_MODULE}, "
                              f"{CONFIG_CLASS}) is accepted.", CONF_FIX)
    from transkun import ModelTransformer

    config, values = ModelTransformer.Config(), section["config"]
    for key, default in vars(config).items():
        if key not in values:
            raise CheckpointError(f"transkun: {path.name} lacks the setting {key!r}.", CONF_FIX)
        problem = _plausible(key, values[key], default)
        if problem:
            raise CheckpointError(f"transkun: {path.name}: {key} = {str(values[key])[:40]} {problem}.", CONF_FIX)
        setattr(config, key, copy.deepcopy(values[key]))
    problem = _consistent(config)
    if problem:
        raise CheckpointError(f"transkun: {path.name}: {problem}.", CONF_FIX)
    return config


class PitchGroupDecoder:
    """Stands in for the wheel's ``NeuralSemiCRFInterval`` over all pitch tracks of a batch of
    segments: ``decode`` builds the interval scores of ``TRACKS_PER_GROUP`` tracks at a time with the
    model's own scorer and decodes them with the wheel's own semi-CRF, so that only one group's
    [frames, frames, tracks] score matrix exists at a time."""

    def __init__(self, scorer: torch.nn.Module, ctx: torch.Tensor):
        self.scorer, self.ctx = scorer, ctx  # ctx: [batch, tracks, frames, features]

    def decode(self, forcedStartPos: list[int] | None = None, forward: bool = False) -> list:
        """The wheel's decode() result: one list of (begin, end) frame pairs per (segment, track),
        segment-major, like the flattened [frames, frames, batch · tracks] matrix it replaces."""
        from transkun.CRF import NeuralSemiCRFInterval

        batch, tracks = self.ctx.shape[:2]
        paths = []
        for b in range(batch):
            for lo in range(0, tracks, TRACKS_PER_GROUP):
                hi = min(lo + TRACKS_PER_GROUP, tracks)
                score, skip = self.scorer(self.ctx[b:b + 1, lo:hi])  # [T, T, 1, g], [T - 1, 1, g]
                starts = None if forcedStartPos is None else forcedStartPos[b * tracks + lo:b * tracks + hi]
                crf = NeuralSemiCRFInterval(score.flatten(-2, -1), skip.flatten(-2, -1))
                paths += crf.decode(forcedStartPos=starts, forward=forward)
                del score, skip, crf  # free this group's matrices before the next one is built
        return paths


class TranskunTranscriber:
    """Piano transcription with Transkun's pretrained 2.0 model."""

    def __init__(self, folder: Path, device: torch.device, options: TranskunOptions | None = None):
        from transkun.ModelTransformer import TransKun

        what = f"transkun checkpoint {WEIGHTS}"
        config = read_config(folder / CONFIG)
        state = safe_torch_load(folder / WEIGHTS)
        state = state.get("best_state_dict", state.get("state_dict", state))
        if not isinstance(state, dict):
            raise CheckpointError(f"{what} holds no state dict of tensors.")
        check_tensors(state, what)
        with checkpoint_errors(what):
            model = TransKun(conf=config)
            # Gradient checkpointing is a training feature; left on it makes torch warn on every call.
            for module in model.modules():
                if hasattr(module, "useGradientCheckpoint"):
                    module.useGradientCheckpoint = False
            load_strict(model, state, what)
        self.model = model.eval().to(device)
        self.device = device
        self.dtype = torch.float32
        self.rate = int(model.fs)
        self.default_segment_s = float(model.segmentSizeInSecond)
        # PitchGroupDecoder knows the 2.0 model's inner-product scorer; an ablation's scorer stays
        # whole. False gives the wheel's own scoring of all tracks at once (the bench's baseline).
        self.grouped_scoring = bool(model.useInnerProductScorer)
        # transcribe() hooks the model's per-segment method to count progress and its scoring
        # method to bound memory (PitchGroupDecoder); one call at a time.
        self._lock = threading.Lock()

    def _frames_to_decoder(self, frames: torch.Tensor) -> tuple[PitchGroupDecoder, torch.Tensor]:
        """Our ``processFramesBatch``: the wheel's gain normalisation, features and backbone, with
        the interval scores left to ``PitchGroupDecoder``. frames: [batch, 1, frames, window]."""
        model = self.model
        mean = torch.mean(frames, dim=[1, 2, 3], keepdim=True)
        std = torch.std(frames, dim=[1, 2, 3], keepdim=True)
        features = model.framewiseFeatureExtractor((frames - mean) / (std + 1e-8)).contiguous()
        features = features.view(frames.shape[0], *features.shape[-3:])  # [batch, frames, mels, channels]
        tracks = torch.tensor(model.targetMIDIPitch, device=features.device)
        ctx = model.backbone(features, outputIndices=tracks)  # [batch, tracks, frames, features]
        return PitchGroupDecoder(model.scorer, ctx), ctx

    def _windows(self, decode: TranskunDecode | None) -> tuple[float, float]:
        """(segment, hop) in seconds for a run: the request's, else the model's segment and our hop."""
        decode = decode or TranskunDecode()
        return float(decode.segment_s or self.default_segment_s), float(decode.hop_s)

    def _hop_samples(self, hop_s: float) -> int:
        hop = self.model.hopSize
        return math.ceil(hop_s * self.rate / hop) * hop

    def num_segments(self, clip: Clip, decode: TranskunDecode | None = None) -> int:
        segment_s, hop_s = self._windows(decode)
        n = round(clip.duration * self.rate)
        pad = math.ceil((segment_s - hop_s) * self.rate)
        return max(1, math.ceil((n + 2 * pad) / self._hop_samples(hop_s)))

    @torch.inference_mode()
    def transcribe(self, clip: Clip, decode: TranskunDecode | None = None,
                   progress: ProgressFn | None = None) -> AdapterOutput:
        segment_s, hop_s = self._windows(decode)  # see TranskunDecode (the hop's choice)
        audio = clip.original_mono(self.rate)
        x = torch.from_numpy(np.ascontiguousarray(audio)).to(self.device)[:, None]  # [samples, 1]
        total = self.num_segments(clip, decode)
        done = 0
        inner = self.model.transcribeFrames

        def counting(*args, **kwargs):  # one call per segment: the only hook for progress
            nonlocal done
            out = inner(*args, **kwargs)
            done += 1
            if progress is not None:
                progress(min(done, total), total)
            return out

        with self._lock:
            self.model.transcribeFrames = counting
            if self.grouped_scoring:
                self.model.processFramesBatch = self._frames_to_decoder
            try:
                events = self.model.transcribe(x, stepInSecond=hop_s, segmentSizeInSecond=segment_s)
            finally:
                del self.model.transcribeFrames  # drop the instance attributes, back to the class methods
                vars(self.model).pop("processFramesBatch", None)
        notes = [
            Note(onset=float(e.start), offset=float(e.end), pitch=int(e.pitch),
                 velocity=int(e.velocity), program=0, is_drum=False)
            for e in events
            if e.pitch >= 0  # sustain/soft pedal events come back with negative pitch
        ]
        notes.sort(key=lambda n: (n.onset, n.pitch))
        return AdapterOutput(notes=notes, info={"segment_s": segment_s, "hop_s": hop_s})


def build(folder: Path, device: torch.device, options: TranskunOptions | None = None) -> TranskunTranscriber:
    return TranskunTranscriber(folder, device, options or TranskunOptions())


SPEC = ModelSpec(
    id=MODEL_ID,
    display_name="Transkun (piano, embedded)",
    description="Piano-only transcriber whose weights ship with the pip package: always available, offline.",
    source="PyPI package transkun 2.0.1 (transkun/pretrained/2.0.pt)",
    licence="MIT code; weights trained on MAESTRO (CC BY-NC-SA 4.0)",
    instruments="Piano only (no other instruments, no drums)",
    size_mb=55.0,
    options_type=TranskunOptions,
    decode_type=TranskunDecode,
    resolve=resolve,
    build=build,
    paper_url="https://arxiv.org/abs/2305.16245",
    packaged=packaged,
)
