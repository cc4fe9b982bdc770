"""YourMT3+'s multi-channel T5 decoder (spec ymt3.md §6–8).

The 26 encoder latents are paired into 13 channel memories; ONE T5 decoder (shared weights) decodes
every channel of every segment as one batch row each, greedily, with a KV cache. The T5 pieces
(RMSNorm, attention, gated-GELU FFN, decoder block, KV cache) are the shared ones of ``models/t5.py``;
what differs from MT3's decoder lives here: the *stored* additive position table, the top-level
token embedding, the scaled LM head, and upstream's end-of-sequence rule.

Shapes: B segments, C = 13 channels, N = B·C decoder rows, T = 110 memory frames, L tokens, d width.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

from torch import Tensor, nn

from .. import greedy, t5
from ..t5 import DecoderStack, KVCache, T5Dims

PAD_ID = 0  # also the decoder start token
EOS_ID = 1


class ChannelProjection(nn.Module):
    """Encoder latents [B, T, K, D] → channel memories [B, K/2, T, d_model].

    Channel c takes latents 2c and 2c+1 concatenated (2c first), then one shared Linear (no bias).
    """

    def __init__(self, d_latent: int, d_model: int, num_channels: int = 13):
        super().__init__()
        self.num_channels = num_channels
        self.linear = nn.Linear(2 * d_latent, d_model, bias=False)

    def forward(self, z: Tensor) -> Tensor:
        b, t, k, d = z.shape
        pairs = z.reshape(b, t, self.num_channels, (k // self.num_channels) * d)  # (2c, 2c+1) → c
        return self.linear(pairs.transpose(1, 2))


class MultiChannelDecoder(DecoderStack):
    """T5 decoder stack with a stored sinusoidal table ``additive_pe`` [max_positions, d].

    Input at position p is E[id] + P[p] (the embedding E is the model's top-level ``embed_tokens``,
    unscaled). No relative attention bias. Same keys as upstream's ``decoder.decoder.*``.
    """

    def __init__(self, dims: T5Dims):
        super().__init__(dims)
        self.additive_pe = nn.Embedding(dims.max_positions, dims.d_model)

    def forward(self, x: Tensor, memory: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Embedded tokens x [N, L, d] → final hidden states [N, L, d].

        Pass ``memory`` [N, T, d] for a full causal pass over all L positions (teacher forcing, the
        naive decoder), or a ``cache`` for incremental decoding (x holds only the new positions).
        """
        positions = t5.position_rows(self.additive_pe.weight, self.offset(memory, cache), x.shape[1])
        return self.run(x + positions.to(x.dtype), memory, cache)


class LMHead(nn.Module):
    """hidden · d^-0.5 → logits (``tie_word_embeddings`` is on in the config, so upstream scales —
    but ``weight`` is a separate tensor: the weights are not actually tied). The inference path
    scales once; upstream's training ``forward`` scales twice (argmax unaffected), not replicated.
    """

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.scale = d_model ** -0.5
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return self.lm_head(h * self.scale)


class TokenDecoder(nn.Module):
    """YourMT3 keeps its token embedding at the top level of the model (upstream's key layout); this
    pairs it with the decoder stack so the shared greedy loop (:func:`greedy.greedy_decode`) can drive it
    with token ids, like MT3's decoder. Holds no weights of its own."""

    def __init__(self, embed: nn.Embedding, decoder: MultiChannelDecoder):
        super().__init__()
        self.embed, self.stack = embed, decoder

    def init_cache(self, memory: Tensor) -> KVCache:
        return self.stack.init_cache(memory)

    def forward(self, tokens: Tensor, memory: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        return self.stack(self.embed(tokens), memory=memory, cache=cache)


def greedy_decode(embed: nn.Embedding, decoder: MultiChannelDecoder, lm_head: LMHead, memory: Tensor,
                  max_tokens: int, on_step: Callable[[int, int], None] | None = None,
                  stop_at_eos: bool = True, use_cache: bool = True,
                  cache_budget: int | None = None, static: bool | None = None) -> list[list[int]]:
    """Greedy decoding of every row of ``memory`` [N, T, d] at once (KV-cached unless ``use_cache``
    is off: the naive reference that re-runs the whole prefix every step).

    Returns per row the generated ids (start token excluded), ending at the EOS that finishes the row,
    at most ``max_tokens``. Upstream's rule (``task_cond_dec_generate``), kept: a row is finished by an
    EOS emitted at step ≥ 1; **an EOS at step 0 does not finish it** — the row keeps decoding, fed the
    EOS as its next input. Finished rows leave the batch (their later upstream outputs are PAD, which
    nobody reads), so they stop costing work. ``stop_at_eos=False`` decodes exactly ``max_tokens``
    per row (benchmarks at equal work). ``cache_budget`` (bytes) bounds the rows' caches together
    (:func:`greedy.greedy_decode`), as does ``static`` (None: CUDA graphs where they apply).
    Call under ``torch.inference_mode()``.
    """
    steps = SimpleNamespace(decoder=TokenDecoder(embed, decoder), lm_head=lm_head)
    return greedy.greedy_decode(steps, memory, max_tokens, use_cache=use_cache, start_id=PAD_ID,
                                eos_id=EOS_ID if stop_at_eos else None, first_eos_step=1, on_step=on_step,
                                cache_budget=cache_budget, static=static)
