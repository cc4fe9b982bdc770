"""Naive baselines the benchmarks (and a cross-check test) compare our decoders against.

They live here, not in the package: production code has no path that exists only to be slow.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mt3_demo.models.yourmt3.decoder import LMHead, MultiChannelDecoder, greedy_decode


def naive_decode(embed: nn.Embedding, decoder: MultiChannelDecoder, lm_head: LMHead, memory: Tensor,
                 max_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """YourMT3's reference decoder for one row (memory [1, T, d]): no cache, the whole prefix
    every step, the same EOS rule as :func:`greedy_decode`."""
    return greedy_decode(embed, decoder, lm_head, memory, max_tokens, stop_at_eos=stop_at_eos,
                         use_cache=False)[0]


def moe_loop(layer: nn.Module, x: Tensor) -> Tensor:
    """YourMT3's mixture-of-experts as a per-expert loop (the code before the grouped dispatch):
    per expert, find its tokens, run it on them, index_add the weighted output, in expert order.
    Works as ``MoE.forward`` too (``layer`` = self)."""
    z = x.reshape(-1, x.shape[-1])
    w, idx = layer.route(z)
    out = torch.zeros_like(z)
    for e, expert in enumerate(layer.experts):
        token, slot = (idx == e).nonzero(as_tuple=True)
        if token.numel():
            out.index_add_(0, token, expert(z[token]) * w[token, slot, None])
    return out.view(x.shape)
