"""MR-MT3's network and contiguous inference (spec mrmt3.md §5–§7).

MR-MT3 is MT3's T5 (``models/t5.py``, reused as is) plus a *memory block*: the ids generated for
the previous segment are embedded with the decoder's token embedding, run through a one-block T5
encoder (``segmem_encoder``, bidirectional, no mask) and the first N output rows are appended to
the cross-attention memory of the next segment:

    cross-attention memory of segment k = [encoder(features_k) (256 rows) ; memory_block(row_{k-1}) (N rows)]

``row_{k-1}`` is segment k−1's full output row as upstream's ``generate`` returns it: the start
token, the generated ids, EOS, zero padding to M = 1024 ids. Segment 0 sees a fixed dummy row.
Segments of one file are therefore decoded strictly in order; what *can* be batched — several
files — is batched in :func:`contiguous_decode`, and each segment's decode is greedy with MT3's KV
cache (cross-attention keys/values of ``[enc ; mem]`` computed once per segment).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..mt3 import vocab
from ..greedy import greedy_decode
from ..t5 import T5, Encoder, T5Dims

MEMORY_IDS_LENGTH = 1024  # M: upstream's max_length; the memory stack always sees 1024 ids
TIE_ID, EOS_ID, START_ID = vocab.event_id("tie"), vocab.EOS, vocab.PAD  # 1134, 1, 0
UPSTREAM_MAX_TOKENS = MEMORY_IDS_LENGTH - 1  # upstream max_length 1024 counts the start token


def dummy_memory_ids(m: int = MEMORY_IDS_LENGTH) -> list[int]:
    """Segment 0's memory row: ``[tie, EOS, 0, 0, …]`` (upstream's hard-coded dummy)."""
    return ([TIE_ID, EOS_ID] + [0] * m)[:m]


def memory_ids_from_generated(generated: Sequence[int], m: int = MEMORY_IDS_LENGTH) -> list[int]:
    """Next segment's memory row from this segment's generated ids (without the start token).

    ``[0, g1, …, EOS]`` right-padded with 0 to M ids; a row longer than M (no EOS within the
    limit) loses its tail — upstream's ``F.pad`` with a negative amount does exactly that.
    """
    row = [START_ID] + list(generated)
    return (row + [0] * (m - len(row)))[:m]


class MRMT3(T5):
    """``T5`` + ``segmem_encoder`` (its input Linear is the checkpoints' ``segmem_proj``).

    memory_length N = rows of the memory block appended to the cross-attention memory (0 = none:
    then the model is exactly MT3's architecture). It is a run-time setting, not a weight.
    """

    ALIASES = {**T5.ALIASES, "segmem_proj.weight": "segmem_encoder.embed_tokens.weight"}

    def __init__(self, dims: T5Dims, segmem_num_layers: int = 1, memory_length: int = 64):
        super().__init__(dims)
        self.segmem_encoder = Encoder(dims, num_layers=segmem_num_layers, input_dim=dims.d_model)
        self.memory_length = memory_length

    def memory_block(self, memory_ids: Tensor, shortcut: bool = True) -> Tensor:
        """Memory ids [B, M] -> memory rows [B, N, d].

        ``segmem_encoder(decoder.embed_tokens(ids))[:, :N]``. With ``shortcut`` the last block
        computes only its N kept rows: its keys and values still cover all M positions (pads
        included, the stack is unmasked), so the result is the same; rows after N are never read.
        ``shortcut=False`` runs the plain stack over all M rows (upstream's way; the naive baseline).
        """
        n = self.memory_length
        b = memory_ids.shape[0]
        if n == 0:
            return self.decoder.embed_tokens.weight.new_zeros(b, 0, self.dims.d_model)
        enc = self.segmem_encoder
        if not shortcut or len(enc.block) == 0:
            return enc(self.decoder.embed_tokens(memory_ids))[:, :n]  # segmem_proj after the lookup
        x = enc.embed_tokens(self.decoder.embed_tokens(memory_ids))
        x = x + enc.pos_emb(0, x.shape[1]).to(x.dtype)
        for block in enc.block[:-1]:
            x = block(x)
        last = enc.block[-1]
        sa = last.layer[0]
        h = sa.layer_norm(x)
        k, v = sa.SelfAttention.keys_values(h)  # [B, H, M, K]
        x = x[:, :n] + sa.SelfAttention.attend(h[:, :n], k, v)
        x = x + last.layer[1](x)
        return enc.final_layer_norm(x)

    def cross_memory(self, encoded: Tensor, memory_ids: Tensor, shortcut: bool = True) -> Tensor:
        """[enc (B, S, d) ; memory block (B, N, d)] -> [B, S + N, d]: what the decoder attends to."""
        return torch.cat([encoded, self.memory_block(memory_ids, shortcut).to(encoded.dtype)], dim=1)

    def forward(self, features: Tensor, tokens: Tensor, memory_ids: Tensor) -> Tensor:  # type: ignore[override]
        """Teacher forcing: features [B, S, mels], decoder input ids [B, T], memory ids [B, M]
        -> logits [B, T, vocab]."""
        return self.logits(tokens, self.cross_memory(self.encode(features), memory_ids))


def contiguous_decode(model: MRMT3, encoded: Sequence[Tensor], max_tokens: int = UPSTREAM_MAX_TOKENS, *,
                      use_cache: bool = True, first_memory_ids: Sequence[Sequence[int]] | None = None,
                      on_segment: Callable[[int, int], None] | None = None,
                      on_step: Callable[[int, int], None] | None = None,
                      stop_at_eos: bool = True, static: bool | None = None) -> list[list[list[int]]]:
    """Upstream's contiguous inference for several files at once.

    encoded[f]        encoder output of file f, [S_f, T, d] (all its segments)
    first_memory_ids  memory row of each file's first segment (default: the dummy row)
    returns           ids[f][k] = generated ids of segment k of file f, without the start token,
                      up to and including EOS when emitted (at most ``max_tokens``)

    Step k decodes segment k of every file that has one, in one batch (their memories differ but
    have the same length); the memory row of step k+1 is built from step k's output.
    ``on_segment(done, total)`` counts decoded segments over all files; ``on_step(step, live_rows)``
    is passed to :func:`greedy_decode`. ``use_cache=False`` is the naive reference (upstream's
    way: no KV cache, whole prefix re-run every step, memory stack over all M rows). ``stop_at_eos=False``
    decodes exactly ``max_tokens`` per segment (benchmarks: a fixed decode length). Call it under ``torch.inference_mode()``.
    """
    device = encoded[0].device if encoded else torch.device("cpu")
    rows = [list(r) for r in first_memory_ids] if first_memory_ids is not None else \
        [dummy_memory_ids() for _ in encoded]
    out: list[list[list[int]]] = [[] for _ in encoded]
    total, done = sum(e.shape[0] for e in encoded), 0
    for k in range(max((e.shape[0] for e in encoded), default=0)):
        live = [f for f, e in enumerate(encoded) if e.shape[0] > k]
        enc = torch.stack([encoded[f][k] for f in live])  # [B, T, d]
        mem_ids = torch.tensor([rows[f] for f in live], dtype=torch.long, device=device)
        memory = model.cross_memory(enc, mem_ids, shortcut=use_cache)
        ids = greedy_decode(model, memory, max_tokens, use_cache=use_cache, start_id=START_ID,
                            eos_id=EOS_ID if stop_at_eos else None, on_step=on_step, static=static)
        for f, g in zip(live, ids):
            out[f].append(g)
            rows[f] = memory_ids_from_generated(g)
        done += len(live)
        if on_segment is not None:
            on_segment(done, total)
    return out
