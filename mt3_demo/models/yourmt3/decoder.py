"""YourMT3+'s multi-channel T5 decoder (spec ymt3.md §6–8).

The 26 encoder latents are paired into 13 channel memories; ONE T5 decoder (shared weights) decodes
every channel of every segment as one batch row each, greedily, with a KV cache. The T5 pieces
(RMSNorm, attention, gated-GELU FFN, decoder block, KV cache) are the shared ones of ``models/t5.py``;
what differs from MT3's decoder lives here: the *stored* additive position table, the top-level
token embedding, the scaled LM head, and upstream's end-of-sequence rule.

Shapes: B segments, C = 13 channels, N = B·C decoder rows, T = 110 memory frames, L tokens, d width.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

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
        offset = self.offset(memory, cache)
        if offset + x.shape[1] > self.additive_pe.num_embeddings:
            raise ValueError(f"position {offset + x.shape[1] - 1} beyond the table "
                             f"({self.additive_pe.num_embeddings} rows)")
        return self.run(x + self.additive_pe.weight[offset:offset + x.shape[1]].to(x.dtype), memory, cache)


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


def greedy_decode(embed: nn.Embedding, decoder: MultiChannelDecoder, lm_head: LMHead, memory: Tensor,
                  max_tokens: int, on_step: Callable[[int, int], None] | None = None,
                  stop_at_eos: bool = True) -> list[list[int]]:
    """Greedy, KV-cached decoding of every row of ``memory`` [N, T, d] at once.

    Returns per row the generated ids (start token excluded), ending at the EOS that finishes the row,
    at most ``max_tokens``. Upstream's rule (``task_cond_dec_generate``), kept: a row is finished by an
    EOS emitted at step ≥ 1; **an EOS at step 0 does not finish it** — the row keeps decoding, fed the
    EOS as its next input. Finished rows leave the batch (their later upstream outputs are PAD, which
    nobody reads), so they stop costing work. ``on_step(step, live_rows)`` after each step.
    ``stop_at_eos=False`` decodes exactly ``max_tokens`` per row (benchmarks at equal work).
    Call under ``torch.inference_mode()``.
    """
    n = memory.shape[0]
    out = torch.zeros(n, max(max_tokens, 0), dtype=torch.long, device=memory.device)
    lengths = [max_tokens] * n
    rows = torch.arange(n, device=memory.device)  # original index of each live row
    ids = torch.full((n, 1), PAD_ID, dtype=torch.long, device=memory.device)
    cache = decoder.init_cache(memory)
    for step in range(max_tokens):
        hidden = decoder(embed(ids), cache=cache)
        next_ids = lm_head(hidden[:, -1]).argmax(-1)  # first maximum on ties, like torch/HF
        out[rows, step] = next_ids
        if on_step is not None:
            on_step(step, int(rows.numel()))
        if stop_at_eos and step >= 1:  # quirk: EOS at step 0 is not an end
            done = next_ids == EOS_ID
            if bool(done.any()):
                for r in rows[done].tolist():
                    lengths[r] = step + 1
                keep = (~done).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                rows, next_ids = rows[keep], next_ids[keep]
                cache.keep(keep)
        ids = next_ids[:, None]
    out = out.cpu()
    return [out[i, :lengths[i]].tolist() for i in range(n)]


def naive_decode(embed: nn.Embedding, decoder: MultiChannelDecoder, lm_head: LMHead, memory: Tensor,
                 max_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """Reference decoder for one row (memory [1, T, d]): no cache, the whole prefix every step.

    The benchmark's baseline and a cross-check of :func:`greedy_decode`; same EOS rule.
    """
    ids = torch.full((1, 1), PAD_ID, dtype=torch.long, device=memory.device)
    out: list[int] = []
    for step in range(max_tokens):
        hidden = decoder(embed(ids), memory=memory)
        nxt = int(lm_head(hidden[:, -1]).argmax(-1))
        out.append(nxt)
        if stop_at_eos and step >= 1 and nxt == EOS_ID:
            break
        ids = torch.cat([ids, ids.new_full((1, 1), nxt)], dim=1)
    return out
