"""MR-MT3's checkpoint files: the registry of published files and a safe Lightning ``.ckpt`` reader.

The published weights (Hugging Face model repo ``gudgud1014/MR-MT3``) are PyTorch Lightning
``Trainer`` checkpoints (docs/models.md#mr-mt3-checkpoints): a ``torch.save``d dict whose ``state_dict`` holds the
model under the prefix ``model.``, next to loop/callback state and the AdamW moments (≈ 2/3 of the
file). We read them with ``torch.load(weights_only=True)``, keep only ``state_dict``, strip the
prefix and drop the optimiser state.

What the tensors cannot tell us: the memory length N ("prev context") — N = 0, 32 and 64 give
identical keys and shapes — and the number of attention heads. N comes from, in order: the user,
a ``config.json`` beside the file (the yaml's ``model.config`` block, ``segmem_length``), the
registry entry of a known file, the file name (``prev_context=N``), the published default 64. The
head count comes from that ``config.json``, else 6 (every published file). Everything else —
widths, layer counts including the memory stack's, mel bins — is read off the shapes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ...checkpoints import CheckpointError, HubFile, checkpoint_errors, empty_weights, read_lightning_checkpoint
from ..mt3.shapes import PUBLISHED_NUM_HEADS, REQUIRED_KEYS, count_blocks, t5_config_from_shapes

HF_REPO = "gudgud1014/MR-MT3"
# No commit of the model repo could be read when this was written; pin it here once known.
HF_REVISION = "main"

DEFAULT_NUM_HEADS = PUBLISHED_NUM_HEADS  # every published file (config/model/*.yaml); not in the shapes
DEFAULT_MEMORY_LENGTH = 64  # test.sh's model_segmem_length for all memory checkpoints


@dataclass(frozen=True)
class KnownCheckpoint:
    """One published MR-MT3 file and how it must be run."""

    filename: str  # path inside the HF repo
    memory_length: int  # N, the prev context the file was trained with
    frontend: str  # the frontend it was trained with (docs/models.md#mr-mt3-checkpoints)
    family: str  # "from-scratch" (trained on Slakh with torchaudio features) or "continual" (from MT3)
    description: str
    sha256: str | None = None
    size_bytes: int | None = None

    @property
    def name(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def hub(self) -> HubFile:
        return HubFile(HF_REPO, self.filename, revision=HF_REVISION, sha256=self.sha256,
                       size_bytes=self.size_bytes)


# A from-scratch file holds the float32 weights plus AdamW's two moments, ≈ 3 × 194,081,792 bytes
# (mrmt3_ckpt_manifest.json's unique_tensor_bytes) + ~0.27 MB of pickle and zip (docs/models.md#mr-mt3-checkpoints;
# the continual file below, of the same architecture, is exactly that plus 266,033 bytes).
FROM_SCRATCH_BYTES = 3 * 194_081_792 + 266_033

# docs/models.md#mr-mt3-checkpoints. From-scratch files were trained on the pre-June-2024 torchaudio mel ("legacy"); the
# continual file was fine-tuned from MT3's weights on the TF frontend (train.sh).
KNOWN_CHECKPOINTS: tuple[KnownCheckpoint, ...] = (
    KnownCheckpoint("exp_segmemV2_prev_context=64_prevaug_frame=3.ckpt", 64, "torchaudio-legacy",
                    "from-scratch", "memory 64 + prior-segment augmentation up to 3 hops (the paper's MR-MT3)",
                    size_bytes=FROM_SCRATCH_BYTES),
    KnownCheckpoint("exp_segmemV2_prev_context=64_prevaug_frame=8.ckpt", 64, "torchaudio-legacy",
                    "from-scratch", "memory 64 + prior-segment augmentation up to 8 hops",
                    size_bytes=FROM_SCRATCH_BYTES),
    KnownCheckpoint("exp_segmemV2_prev_context=64.ckpt", 64, "torchaudio-legacy", "from-scratch",
                    "memory 64, no augmentation",
                    size_bytes=FROM_SCRATCH_BYTES),
    KnownCheckpoint("exp_segmemV2_prev_context=32.ckpt", 32, "torchaudio-legacy", "from-scratch",
                    "memory 32, no augmentation",
                    size_bytes=FROM_SCRATCH_BYTES),
    KnownCheckpoint("exp_segmemV2_prev_context=0.ckpt", 0, "torchaudio-legacy", "from-scratch",
                    "no memory: MT3 architecture trained from scratch on Slakh (baseline)",
                    size_bytes=FROM_SCRATCH_BYTES),
    KnownCheckpoint("continual/exp_segmemV2_prev_context=0_MT3_1e-5_ep100_norandom.ckpt", 0, "tf",
                    "continual", "MT3 weights fine-tuned 100 epochs on Slakh, no memory",
                    sha256="74b2620009e9455a8f36da8a2b41950da4f12a229652a6cbd3ccb4333920c97f",
                    size_bytes=582_511_409),
)
DEFAULT_CHECKPOINT = "exp_segmemV2_prev_context=64_prevaug_frame=3.ckpt"

# Files in the same HF repo that are *not* MR-MT3 models (a clear error instead of a key dump).
NOT_MR_MT3 = {
    "mt3.pth": "the official MT3 weights re-hosted (plain MT3, no memory) — use the MT3 model instead",
    "commu_mt3.pt": "an MT3 trained on ComMU (another task, plain MT3 class)",
}


def known_checkpoint(name: str | Path | None) -> KnownCheckpoint | None:
    """The registry entry for a file name (basename or repo path), or None."""
    if name is None:
        return None
    base = Path(str(name)).name
    for k in KNOWN_CHECKPOINTS:
        if base == k.name or str(name) == k.filename:
            return k
    return None


def memory_length_from_name(name: str) -> int | None:
    """``…prev_context=64…`` -> 64 (the naming of every upstream experiment), else None."""
    m = re.search(r"prev_context=(\d+)", name)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------------------------
# Reading a .ckpt


# The safe reader and the ``model.`` prefix handling are the shared ones of ``mt3_demo.checkpoints``
# (``read_lightning_checkpoint``): YourMT3's Lightning files go through them too.


# ------------------------------------------------------------------------------------------------
# Shapes -> dims


@dataclass
class MRMT3Config:
    """Everything needed to build the network; most of it is read off the state dict's shapes."""

    d_model: int = 512
    n_mels: int = 512  # encoder input depth = proj.weight.shape[1]
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int = 8
    vocab_size: int = 1536
    segmem_num_layers: int = 1
    segmem_length: int = 64  # N, memory rows appended to the cross-attention keys
    layer_norm_epsilon: float = 1e-6


def config_from_state_dict(sd: Mapping[str, torch.Tensor], what: str, num_heads: int,
                           segmem_length: int) -> MRMT3Config:
    """Dims from shapes (docs/models.md#mr-mt3-checkpoints): widths, layer counts — memory layers included — and the mel depth."""
    if all(k in sd for k in REQUIRED_KEYS) and not any(
            k.startswith("segmem_encoder.") or k.startswith("segmem_proj.") for k in sd):
        raise CheckpointError(
            f"{what} has no memory block (no segmem_* weights): it is a plain MT3 checkpoint, not "
            "MR-MT3.", "load it with the MT3 model instead.")
    t5 = t5_config_from_shapes(sd, what, num_heads)
    return MRMT3Config(**t5, n_mels=sd["proj.weight"].shape[1],
                       segmem_num_layers=count_blocks(sd, "segmem_encoder"), segmem_length=segmem_length)


# ------------------------------------------------------------------------------------------------
# A resolved location: which file, which side-car config, which registry entry


@dataclass
class Location:
    """What ``resolve`` hands to ``build``: the .ckpt path plus what we know about it."""

    path: Path
    config_json: Path | None = None
    known: KnownCheckpoint | None = None
    override: Path | None = None  # the user's --checkpoint (file or folder), None = default source

    @property
    def name(self) -> str:
        return self.path.name


def find_in_folder(folder: Path) -> Location:
    """A folder holding one ``.ckpt`` (and optionally ``config.json``).

    A folder of several published files resolves to the first known one in registry order (the
    default first); ``checkpoint_name`` then picks another. Several unknown files are ambiguous.
    """
    folder = Path(folder)
    ckpts = sorted(p for p in folder.iterdir() if p.suffix == ".ckpt" and p.is_file())
    if not ckpts:
        raise CheckpointError(f"mr_mt3: no .ckpt file in {folder.name}/.",
                              "put the Lightning .ckpt (and its config.json) in that folder.")
    if len(ckpts) > 1:
        names = {p.name for p in ckpts}
        known = [k.name for k in KNOWN_CHECKPOINTS if k.name in names]
        if not known:
            raise CheckpointError(f"mr_mt3: {folder.name}/ holds several .ckpt files "
                                  f"({', '.join(sorted(names))}).", "pass the file itself.")
        ckpts = [folder / known[0]]
    cfg = folder / "config.json"
    return Location(ckpts[0], cfg if cfg.is_file() else None, known_checkpoint(ckpts[0].name), folder)


def location_for_file(path: Path) -> Location:
    """A ``.ckpt`` file; a ``config.json`` beside it is used as its config."""
    path = Path(path)
    cfg = path.parent / "config.json"
    return Location(path, cfg if cfg.is_file() else None, known_checkpoint(path.name), path)


def read_config_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"mr_mt3: could not read {Path(path).name} beside the checkpoint "
                              f"({type(e).__name__}).") from e
    if not isinstance(cfg, dict):
        raise CheckpointError(f"mr_mt3: {Path(path).name} beside the checkpoint is not a JSON object.")
    return cfg.get("config", cfg) if isinstance(cfg.get("config"), dict) else cfg


# ------------------------------------------------------------------------------------------------
# File -> loaded model


@dataclass
class LoadedCheckpoint:
    model: Any  # MRMT3, on the CPU, eval mode
    config: MRMT3Config
    location: Location
    memory_length_source: str  # "user", "config.json", "registry", "file name" or "default"


def settle_memory_length(location: Location, cfg_json: Mapping[str, Any],
                         user: int | None) -> tuple[int, str]:
    """N and where it came from: user > config.json > registry > file name > default 64."""
    if user is not None:
        n, src = int(user), "user"
    elif cfg_json.get("segmem_length") is not None:
        n, src = int(cfg_json["segmem_length"]), "config.json"
    elif location.known is not None:
        n, src = location.known.memory_length, "registry"
    elif (parsed := memory_length_from_name(location.name)) is not None:
        n, src = parsed, "file name"
    else:
        n, src = DEFAULT_MEMORY_LENGTH, "default"
    if not 0 <= n <= 1024:
        raise CheckpointError(f"mr_mt3: memory length must be between 0 and 1024, not {n}.",
                              "set segmem_length in config.json beside the checkpoint to the trained value.")
    return n, src


def load_model(location: Location, memory_length: int | None = None,
               mmap: bool | None = None) -> LoadedCheckpoint:
    """Read ``location.path`` safely and load it strictly into an :class:`MRMT3` (CPU, eval)."""
    from ..t5 import T5Dims, load_t5_state_dict
    from .model import MRMT3

    what = f"MR-MT3 checkpoint {location.name}"
    if location.name in NOT_MR_MT3:
        raise CheckpointError(f"{location.name} is not an MR-MT3 checkpoint: {NOT_MR_MT3[location.name]}.")
    sd, _ = read_lightning_checkpoint(location.path, what, mmap)  # tensors checked there
    cfg_json = read_config_json(location.config_json)
    with checkpoint_errors(what):  # config.json values of the wrong type included
        n, n_src = settle_memory_length(location, cfg_json, memory_length)
        heads = int(cfg_json.get("num_heads") or DEFAULT_NUM_HEADS)
        cfg = config_from_state_dict(sd, what, heads, n)
        cfg.layer_norm_epsilon = float(cfg_json.get("layer_norm_epsilon", cfg.layer_norm_epsilon))
        dims = T5Dims(d_model=cfg.d_model, num_heads=cfg.num_heads, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                      num_layers=cfg.num_layers, num_decoder_layers=cfg.num_decoder_layers,
                      vocab_size=cfg.vocab_size, input_dim=cfg.n_mels, eps=cfg.layer_norm_epsilon)
        with empty_weights():  # no random init: the checkpoint's tensors become the parameters
            model = MRMT3(dims, segmem_num_layers=cfg.segmem_num_layers, memory_length=n)
        # strict: keys, shapes, aliases equal, inv_freq buffers; the position tables rebuilt from them
        load_t5_state_dict(model, sd, what, assign=True)
    return LoadedCheckpoint(model.eval(), cfg, location, n_src)
