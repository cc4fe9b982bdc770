"""Reading YourMT3's Lightning checkpoints without executing pickled code (docs/models.md#yourmt3-checkpoint).

The ``.ckpt`` files pickle upstream objects in ``hyper_parameters`` (a ``utils.task_manager.
TaskManager`` with its tokenizer, codec and numpy arrays), so a plain ``torch.load(weights_only=True)``
refuses them and ``weights_only=False`` would import and run upstream code. The shared reader
(:func:`mt3_demo.checkpoints.read_checkpoint`) replaces exactly those classes by inert stand-ins. We
need only ``state_dict`` and the plain-dict configs (``audio_cfg``, ``model_cfg``) of
``hyper_parameters``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ...checkpoints import read_lightning_checkpoint


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, hyper_parameters) of a Lightning ``.ckpt`` (or a bare state dict file).

    The file is memory-mapped: optimizer state in it is never copied into memory, and the weights
    are copied out of the mapping one by one (each in memory of its own).
    """
    path = Path(path)
    sd, obj = read_lightning_checkpoint(path, f"checkpoint {path.name}")
    hp = obj.get("hyper_parameters") if isinstance(obj, Mapping) and "state_dict" in obj else None
    return sd, (dict(hp) if isinstance(hp, Mapping) else {})
