"""What a T5 checkpoint's tensor shapes say about its config: everything but the head count.

MT3's ``mt3.pth`` and MR-MT3's ``.ckpt`` files hold the same T5 (kunato's key names). Widths and
layer counts are read off the tensors; the number of attention heads is not in any shape
(``q.weight`` is [heads·d_kv, d_model] for any split), so it is a parameter: the published files'
6 unless a ``config.json`` beside the weights says otherwise. Reading shapes writes nothing.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ...checkpoints import CheckpointError

PUBLISHED_NUM_HEADS = 6  # every published MT3 / MR-MT3 file (Magenta's gin, MR-MT3's yaml)
REQUIRED_KEYS = ("proj.weight", "decoder_embed_tokens.weight", "lm_head.weight",
                 "encoder.block.0.layer.0.SelfAttention.q.weight",
                 "encoder.block.0.layer.1.DenseReluDense.wi_0.weight")


def count_blocks(sd: Mapping[str, torch.Tensor], stack: str) -> int:
    """Blocks of ``stack`` ("encoder", "decoder", "segmem_encoder"): 1 + the highest block index."""
    ids = {int(m.group(1)) for k in sd if (m := re.match(rf"{stack}\.block\.(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def t5_config_from_shapes(sd: Mapping[str, torch.Tensor], what: str,
                          num_heads: int = PUBLISHED_NUM_HEADS) -> dict[str, Any]:
    """A kunato-style ``config.json`` dict (d_model, num_heads, d_kv, d_ff, layer counts, vocab)."""
    missing = [k for k in REQUIRED_KEYS if k not in sd]
    if missing:
        raise CheckpointError(f"{what} does not look like an MT3/MR-MT3 model: missing {', '.join(missing)}.")
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    if inner % num_heads:
        raise CheckpointError(f"{what}: attention width {inner} is not divisible by {num_heads} heads.",
                              "give the right head count in a config.json beside the checkpoint.")
    return {
        "d_model": int(sd["proj.weight"].shape[0]), "num_heads": num_heads, "d_kv": inner // num_heads,
        "d_ff": int(sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]),
        "num_layers": count_blocks(sd, "encoder"), "num_decoder_layers": count_blocks(sd, "decoder"),
        "vocab_size": int(sd["lm_head.weight"].shape[0]),
    }
