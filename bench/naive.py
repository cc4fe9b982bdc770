"""Naive baselines the benchmarks (and a cross-check test) compare our decoders against.

They live here, not in the package: production code has no path that exists only to be slow.
"""
from __future__ import annotations

from torch import Tensor, nn

from mt3_demo.models.yourmt3.decoder import LMHead, MultiChannelDecoder, greedy_decode


def naive_decode(embed: nn.Embedding, decoder: MultiChannelDecoder, lm_head: LMHead, memory: Tensor,
                 max_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """YourMT3's reference decoder for one row (memory [1, T, d]): no cache, the whole prefix
    every step, the same EOS rule as :func:`greedy_decode`."""
    return greedy_decode(embed, decoder, lm_head, memory, max_tokens, stop_at_eos=stop_at_eos,
                         use_cache=False)[0]
