"""YourMT3+ (YPTF.MoE+Multi) as a demo model: registry entry, checkpoint resolution, transcription.

clip (16 kHz mono) → 32767-sample segments → batches of segments: spectrogram → encoder → 13 channel
memories → greedy decoding of all segments × channels of the batch as one decoder batch → tokens per
segment and channel → notes (merged per channel across segments, channels mixed) → shared Notes.

Load options (:class:`mt3_demo.options.YourMT3Options`): ``checkpoint_name``, ``precision``. Per
request (:class:`mt3_demo.options.YourMT3Decode`): ``max_tokens`` per channel (at most the decoder's
position table), ``batch_size`` (segments decoded together), ``stop_at_eos``, ``cuda_graphs``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch

from ...audio import Clip
from ...checkpoints import CheckpointError, HubFile, Sources, resolve_file
from ...options import YOURMT3_DEFAULT_CHECKPOINT, OptionError, YourMT3Decode, YourMT3Options
from .. import t5
from ..base import AdapterOutput, ModelSpec, ProgressFn, half_dtype, ieee_float32_convolutions
from .features import num_segments, segment_audio, segment_start_times
from .model import YourMT3, load_model
from .notes import decode_tokens, to_shared_notes
from .tokenizer import MAX_TOKENS_PER_CHANNEL

MODEL_ID = "yourmt3"
SPACE = "mimbres/YourMT3"
_LOGS = "amt/logs/2024"


@dataclass(frozen=True)
class PublishedCheckpoint:
    name: str
    hub: HubFile


# The YourMT3 checkpoints this code can run (docs/models.md#yourmt3-checkpoint): the two YPTF.MoE+Multi ones. The other
# published ones (YMT3+, YPTF+Single, YPTF+Multi) use encoders/decoders not implemented here.
CHECKPOINTS = {
    c.name: c for c in [
        PublishedCheckpoint("YPTF.MoE+Multi (noPS)", HubFile(
            SPACE, f"{_LOGS}/mc13_256_g4_all_v7_mt3f_sqr_rms_moe_wf4_n8k2_silu_rope_rp_b36_nops/checkpoints/last.ckpt",
            revision="main",  # the Space publishes no tags; the sha256 pins the content
            sha256="ae38e415c79efd5592dcb9b658cdb99ddb11d4c4e1eaa364cab04a052473fc25",
            size_bytes=536_000_000, repo_type="space")),
        PublishedCheckpoint("YPTF.MoE+Multi (PS)", HubFile(
            SPACE, f"{_LOGS}/mc13_256_g4_all_v7_mt3f_sqr_rms_moe_wf4_n8k2_silu_rope_rp_b80_ps2/checkpoints/model.ckpt",
            revision="main", sha256=None, size_bytes=724_000_000, repo_type="space")),
    ]
}
DEFAULT_CHECKPOINT = YOURMT3_DEFAULT_CHECKPOINT
NOT_IMPLEMENTED = {  # published too, but with a T5 encoder / an MLP Perceiver-TF / a single decoder
    "YMT3+": "a T5 encoder on mel spectrograms and a single decoder",
    "YPTF+Single (noPS)": "a Perceiver-TF without mixture-of-experts and a single decoder",
    "YPTF+Multi (PS)": "a Perceiver-TF without mixture-of-experts",
}


def _published(name: str | None) -> PublishedCheckpoint:
    name = name or DEFAULT_CHECKPOINT
    if name in NOT_IMPLEMENTED:
        raise CheckpointError(f"{MODEL_ID}: checkpoint {name!r} uses {NOT_IMPLEMENTED[name]}, which this "
                              "adapter does not implement.", f"use one of: {', '.join(CHECKPOINTS)}.")
    if name not in CHECKPOINTS:
        raise CheckpointError(f"{MODEL_ID}: unknown checkpoint name {name!r}.",
                              f"use one of: {', '.join(CHECKPOINTS)}.")
    return CHECKPOINTS[name]


def resolve(checkpoint: Path | None = None, options: YourMT3Options | None = None, fetch: bool = True,
            sources: Sources = Sources()) -> Path:
    """The checkpoint file of ``options.checkpoint_name``: the given file, a folder holding its
    published file name (``last.ckpt``; another published name in the folder is taken too),
    <checkpoints root>/yourmt3/, or the download from the Space (sha256-checked)."""
    pub = _published((options or YourMT3Options()).checkpoint_name)
    if checkpoint is not None:
        folder = Path(checkpoint).expanduser()
        if folder.is_dir() and not (folder / pub.hub.basename).is_file():
            # a folder with another published file name (e.g. model.ckpt of the PS variant) is fine too
            others = [c.hub.basename for c in CHECKPOINTS.values() if (folder / c.hub.basename).is_file()]
            if others:
                return folder / others[0]
    return resolve_file(MODEL_ID, pub.hub.basename, checkpoint, pub.hub, fetch=fetch, sources=sources)


def choose_dtype(device: torch.device, precision: str | None) -> torch.dtype:
    """CPU: float32 always. CUDA: "auto" = float32 too; "fp16" / "bf16" on request
    (:func:`~mt3_demo.models.base.half_dtype`, the one reading of a precision).

    The issue asked for half precision "as the Space does", but the Space's ``-pr 16`` only reaches
    the Lightning Trainer, which its ``transcribe`` never uses (docs/models.md#how-each-model-is-run-and-why): the Space runs float32.
    Casting the whole model (norms, position table, residual stream, KV cache) to bf16 changes the
    greedy ids of most channels on the fixtures, so half precision stays opt-in.
    """
    return half_dtype(precision or "auto", device) or torch.float32


ENCODE_SEGMENTS = 2  # segments per encoder pass on the CPU (see YourMT3Transcriber.__init__)
# What the decoder caches of a chunk may grow by past their first block (16 positions): a chunk's
# 8 × 13 channels start at ~0.3 GB; channels running to 256 tokens would add 6 MB each (0.6 GB if
# all did). Most channels stop early; the ones that do not fit wait and resume (greedy.greedy_decode).
CACHE_GROWTH_MB = {"cpu": 128, "cuda": 2048}


class YourMT3Transcriber:
    """A loaded YourMT3+ model. ``decode.batch_size`` segments (× 13 channels) are decoded together."""

    def __init__(self, model: YourMT3, device: torch.device, dtype: torch.dtype,
                 checkpoint: str = "", variant: str = DEFAULT_CHECKPOINT):
        self.device, self.dtype = device, dtype
        if device.type == "cuda" and dtype == torch.float32:
            ieee_float32_convolutions()  # the pre-encoder's convolutions would otherwise run in TF32
        self.model = model.to(device).eval()
        for child_name, child in self.model.named_children():
            if child_name != "spectrogram":  # the frontend stays float32 (see LogSpectrogram)
                child.to(dtype)
        # On the CPU the encoder runs on fewer segments at a time than the decoder: its pre-encoder
        # maps are [128, 110, 1024] floats (58 MB each, several alive per block) for every segment,
        # while a segment's channel memories are 3 MB and a decoder step costs about the same for
        # 1 or 8 segments. Measured (README "Memory"): 40 s, 8 → 2 per encoder pass: run peak
        # 1151 → 687 MB and 36.5 → 27.3 s. CUDA keeps whole chunks (an H200 transcribed 60 s in
        # 0.65 s: README "On a GPU").
        self.encode_segments = ENCODE_SEGMENTS if device.type == "cpu" else None  # None: the whole chunk
        self.checkpoint, self.variant = checkpoint, variant  # file name; published variant

    def num_segments(self, clip: Clip, decode: object = None) -> int:
        return num_segments(len(clip.samples))

    def _encode(self, segments: np.ndarray) -> torch.Tensor:
        """[b, samples] audio segments → channel memories [b, 13, 110, d]."""
        x = torch.from_numpy(segments).to(self.device)
        return self.model.encode(self.model.spectrogram(x).to(self.dtype))

    def max_tokens(self, decode: YourMT3Decode) -> int:
        """The run's limit per channel: the request's, else the tokenizer's; within the position table."""
        max_tokens = decode.max_tokens or MAX_TOKENS_PER_CHANNEL
        rows = self.model.dims.decoder.max_positions
        if max_tokens > rows:
            raise OptionError(f"max_tokens must be at most {rows} for this YourMT3 checkpoint, not {max_tokens}.")
        return max_tokens

    @torch.inference_mode()
    def tokens(self, samples: np.ndarray, decode: YourMT3Decode | None = None,
               progress: ProgressFn | None = None) -> list[list[list[int]]]:
        """16 kHz mono → tokens[segment][channel] (ids without the start token, ≤ max_tokens each)."""
        decode = decode or YourMT3Decode()
        max_tokens, batch = self.max_tokens(decode), decode.batch_size
        encode_segments = self.encode_segments or batch
        static = None if decode.cuda_graphs else False
        segments = segment_audio(samples)
        n = len(segments)
        out: list[list[list[int]]] = []
        for i in range(0, n, batch):
            end = min(i + batch, n)
            memory = torch.cat([self._encode(segments[j:min(j + encode_segments, end)])
                                for j in range(i, end, encode_segments)])
            out += self.model.generate(memory, max_tokens, cache_budget=self.cache_budget(memory),
                                       stop_at_eos=decode.stop_at_eos, static=static)
            if progress is not None:
                progress(min(i + batch, n), n)
        return out

    def cache_budget(self, memory: torch.Tensor) -> int:
        """Bytes the decoder caches of ``memory``'s rows [b, 13, frames, d] may hold together: all
        rows at their first block, plus CACHE_GROWTH_MB."""
        rows, frames = memory.shape[0] * memory.shape[1], memory.shape[2]
        first = t5.cache_bytes(self.model.dims.decoder, frames, 1, memory.element_size())
        return rows * first + int(CACHE_GROWTH_MB.get(self.device.type, 128) * 2**20)

    def transcribe(self, clip: Clip, decode: YourMT3Decode | None = None,
                   progress: ProgressFn | None = None) -> AdapterOutput:
        decode = decode or YourMT3Decode()
        tokens = self.tokens(clip.samples, decode, progress)
        decoded = decode_tokens(tokens, segment_start_times(len(tokens)))
        errors = decoded.errors()
        info = {"checkpoint": self.checkpoint, "variant": self.variant, "segments": len(tokens),
                "max_tokens": self.max_tokens(decode),
                "decoded_tokens": sum(len(ch) for seg in tokens for ch in seg)}
        if errors:
            info["decoding_errors"] = errors
        return AdapterOutput(notes=to_shared_notes(decoded.notes), tokens=tokens, info=info)


def build(location: Path, device: torch.device, options: YourMT3Options | None = None) -> YourMT3Transcriber:
    """Load the resolved checkpoint (the token limit is a decode option, checked per run against
    its position table)."""
    options = options or YourMT3Options()
    model, _ = load_model(Path(location))
    return YourMT3Transcriber(model, device, choose_dtype(device, options.precision),
                              checkpoint=Path(location).name, variant=options.checkpoint_name)


SPEC = ModelSpec(
    id=MODEL_ID,
    display_name="YourMT3+ (YPTF.MoE+Multi)",
    description=("Multi-instrument transcription with singing voice: a Perceiver-TF encoder with "
                 "mixture-of-experts layers and 13 decoder channels (one per instrument group)."),
    source=f"Hugging Face Space {SPACE} (repo_type space): {CHECKPOINTS[DEFAULT_CHECKPOINT].hub.filename}",
    licence="Apache-2.0",
    instruments=("Piano, chromatic percussion, organ, guitar, bass, strings, brass, reed, pipe, synth "
                 "lead/pad, singing voice (solo and chorus), drums"),
    size_mb=188.0,  # float32 weights (47.1 M parameters); the .ckpt file is 536 MB with optimizer state
    options_type=YourMT3Options,
    decode_type=YourMT3Decode,
    resolve=resolve,
    build=build,
    paper_url="https://arxiv.org/abs/2407.04822",
    published=lambda location, options: _published((options or YourMT3Options()).checkpoint_name).hub,
)
