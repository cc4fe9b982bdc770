"""The one T5 stack shared by MT3 and MR-MT3 (spec mt3.md §5, mrmt3.md §5–7).

T5.1.1-style encoder-decoder as MT3 uses it: pre-norm RMSNorm, unscaled multi-head attention
(T5 folds 1/sqrt(d_kv) into the weights), gated-GELU feed-forward, no biases, no relative position
bias, and *fixed sinusoidal* absolute positions added to the encoder and decoder inputs. The encoder
reads continuous features (a Linear input projection instead of a token embedding).

Module and parameter names mirror the kunato/mt3-pytorch state dict (``encoder.block.{i}.layer.0.
SelfAttention.q.weight`` …), which is why a few attributes are CamelCase: a checkpoint then loads
with a plain strict ``load_state_dict`` once its aliased keys are folded (:func:`fold_aliases`).

Shapes: B batch, T decoder positions, S encoder/memory positions, H heads, K = d_kv.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POSITION_FORMULAS = ("checkpoint", "magenta")


@dataclass(frozen=True)
class T5Dims:
    """Sizes of the network; read from a kunato/HF ``config.json`` with :meth:`from_config`."""

    d_model: int = 512
    num_heads: int = 6
    d_kv: int = 64  # per head; num_heads * d_kv need not equal d_model
    d_ff: int = 1024
    num_layers: int = 8  # encoder blocks
    num_decoder_layers: int = 8
    vocab_size: int = 1536
    input_dim: int = 512  # width of the continuous encoder input (mel bins for MT3)
    eps: float = 1e-6
    max_positions: int = 2048  # rows of the sinusoidal table (kunato and MR-MT3: 2048)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], input_dim: int | None = None,
                    max_positions: int = 2048) -> "T5Dims":
        d_model = int(config["d_model"])
        return cls(
            d_model=d_model,
            num_heads=int(config["num_heads"]),
            d_kv=int(config["d_kv"]),
            d_ff=int(config["d_ff"]),
            num_layers=int(config["num_layers"]),
            num_decoder_layers=int(config.get("num_decoder_layers") or config["num_layers"]),
            vocab_size=int(config["vocab_size"]),
            input_dim=int(input_dim if input_dim is not None else d_model),
            eps=float(config.get("layer_norm_epsilon", 1e-6)),
            max_positions=max_positions,
        )


# ------------------------------------------------------------------------------------------------
# Positions


def kunato_inv_freq(d_model: int) -> Tensor:
    """kunato's frequencies ω_i = 10000^(−2i/d), i < d/2 (float32, what its checkpoints store)."""
    return 1.0 / (10000 ** (torch.arange(0, d_model, 2, dtype=torch.float32) / d_model))


def magenta_inv_freq(d_model: int) -> Tensor:
    """Magenta's ``layers.sinusoidal`` frequencies ω_i = 10000^(−i/(d/2−1)) (float64).

    These are what the official MT3 weights were trained with (mt3.md §5, §13.1).
    """
    half = d_model // 2
    return 10000.0 ** (-torch.arange(half, dtype=torch.float64) / (half - 1))


def sinusoid_table(inv_freq: Tensor, length: int) -> Tensor:
    """[length, 2·len(inv_freq)]: sines of p·ω in the first half, cosines in the second.

    Computed in the dtype of ``inv_freq``: float32 reproduces kunato's table bit for bit, float64
    is what Magenta's NumPy code does before casting to float32.
    """
    angles = torch.arange(length, dtype=inv_freq.dtype)[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


class SinusoidalPositions(nn.Module):
    """Fixed position table P [max_positions, d_model], added to the inputs.

    ``inv_freq`` is a buffer only because kunato's checkpoints store it. ``formula`` picks the table:
    "checkpoint" uses the stored frequencies, "magenta" recomputes Magenta's closed form. The table
    is rebuilt after every ``load_state_dict`` (a post-hook), so it always follows the loaded buffer.
    """

    def __init__(self, d_model: int, max_positions: int = 2048, formula: str = "checkpoint"):
        super().__init__()
        self.max_positions = max_positions
        self.formula = formula
        inv_freq = torch.empty(d_model // 2)
        if not inv_freq.is_meta:  # on the meta device the checkpoint supplies it (and arange there imports sympy)
            inv_freq = kunato_inv_freq(d_model)
        self.register_buffer("inv_freq", inv_freq)
        self.register_buffer("table", torch.empty(0), persistent=False)
        self.rebuild()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.rebuild())

    def rebuild(self, formula: str | None = None) -> None:
        if formula is not None:
            if formula not in POSITION_FORMULAS:
                raise ValueError(f"position formula must be one of {POSITION_FORMULAS}, not {formula!r}")
            self.formula = formula
        if self.inv_freq.is_meta:  # built on the meta device, weights not loaded yet
            self.table = torch.empty(self.max_positions, 2 * self.inv_freq.numel(), device="meta")
            return
        freq = self.inv_freq if self.formula == "checkpoint" else magenta_inv_freq(2 * self.inv_freq.numel())
        self.table = sinusoid_table(freq.detach().cpu(), self.max_positions).to(self.inv_freq.device)

    def forward(self, offset: int | Tensor, length: int) -> Tensor:
        """Rows offset .. offset+length−1 → [length, d_model]."""
        return position_rows(self.table, offset, length)


def position_rows(table: Tensor, offset: int | Tensor, length: int) -> Tensor:
    """Rows offset .. offset+length−1 of a position table [P, d] → [length, d].

    ``offset`` is a Python int (checked against the table) or, on a :class:`StaticKVCache`, a
    device tensor [1] (gathered without reading it back, so a CUDA graph can replay the lookup;
    unchecked here: every adapter keeps its ``max_tokens`` within its decoder's table).
    """
    if torch.is_tensor(offset):
        return table.index_select(0, offset + torch.arange(length, device=table.device))
    if offset + length > table.shape[0]:
        raise ValueError(f"position {offset + length - 1} beyond the table ({table.shape[0]} rows)")
    return table[offset:offset + length]


# ------------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    """T5 layer norm: x / sqrt(mean(x²) + eps) · w, no mean subtraction, no bias; statistics in float32."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 at least (float64 stays)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(self.weight.dtype)  # fp16/bf16 weights: HF casts before the scale


class Attention(nn.Module):
    """Multi-head attention without biases and without 1/sqrt(d_kv) scaling (T5 convention)."""

    def __init__(self, d_model: int, num_heads: int, d_kv: int):
        super().__init__()
        self.num_heads, self.d_kv = num_heads, d_kv
        inner = num_heads * d_kv
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)

    def heads(self, x: Tensor) -> Tensor:
        """[B, T, H·K] → [B, H, T, K]."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.d_kv).transpose(1, 2)

    def keys_values(self, m: Tensor) -> tuple[Tensor, Tensor]:
        """Memory [B, S, d] → keys, values [B, H, S, K] (computed once per memory for cross-attention)."""
        return self.heads(self.k(m)), self.heads(self.v(m))

    def attend(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
               bias: Tensor | None = None) -> Tensor:
        """Queries from x [B, T, d] over k, v [B, H, S, K] → [B, T, d]. ``mask`` [T, S] bool, True = visible.

        One query per row (a decoder step) runs as two batched matrix-vector products around a
        float32 softmax, HF T5's formulation: a decoder step only streams k and v once, and the
        fused kernel, built for long queries, reads them slower (measured 1.3× at 30 rows × 256
        keys, bench/roofline.py). Longer queries take the fused kernel. ``bias`` [S] (one query
        only: a :class:`StaticKVCache`'s) is added to the float32 scores: −inf hides a key.
        """
        q = self.heads(self.q(x))
        if q.shape[2] == 1 and mask is None:
            scores = torch.matmul(q, k.transpose(-1, -2)).float()  # [B, H, 1, S]
            if bias is not None:
                scores = scores + bias
            out = torch.matmul(F.softmax(scores, dim=-1).to(v.dtype), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        b, _, t, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(b, t, self.num_heads * self.d_kv))


class GatedGeluFFN(nn.Module):
    """gelu_tanh(x·wi_0) ⊙ (x·wi_1) → wo (wi_0 is the GELU branch, wi_1 the linear one)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.wi_0 = nn.Linear(d_model, d_ff, bias=False)
        self.wi_1 = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


# Sub-layers: a pre-norm and one operation; the residual add happens in the block.
class SelfAttentionLayer(nn.Module):
    def __init__(self, dims: T5Dims):
        super().__init__()
        self.SelfAttention = Attention(dims.d_model, dims.num_heads, dims.d_kv)
        self.layer_norm = RMSNorm(dims.d_model, dims.eps)


class CrossAttentionLayer(nn.Module):
    def __init__(self, dims: T5Dims):
        super().__init__()
        self.EncDecAttention = Attention(dims.d_model, dims.num_heads, dims.d_kv)
        self.layer_norm = RMSNorm(dims.d_model, dims.eps)


class FeedForwardLayer(nn.Module):
    def __init__(self, dims: T5Dims):
        super().__init__()
        self.DenseReluDense = GatedGeluFFN(dims.d_model, dims.d_ff)
        self.layer_norm = RMSNorm(dims.d_model, dims.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.DenseReluDense(self.layer_norm(x))


class EncoderBlock(nn.Module):
    """x += SelfAttn(norm(x)) (bidirectional, no mask); x += FFN(norm(x))."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.layer = nn.ModuleList([SelfAttentionLayer(dims), FeedForwardLayer(dims)])

    def forward(self, x: Tensor) -> Tensor:
        sa = self.layer[0]
        h = sa.layer_norm(x)
        x = x + sa.SelfAttention.attend(h, *sa.SelfAttention.keys_values(h))
        return x + self.layer[1](x)


def cache_bytes(dims: T5Dims, frames: int, positions: int, element_bytes: int = 4) -> int:
    """One batch row's decoder cache: cross-attention keys/values of ``frames`` encoder frames and
    self-attention storage for ``positions`` (as :meth:`KVCache.storage` rounds them up)."""
    return element_bytes * dims.num_decoder_layers * 2 * dims.num_heads * dims.d_kv * \
        (frames + KVCache.storage(positions))


class KVCache:
    """Decoder keys/values: cross-attention ones computed once, self-attention ones growing.

    cross[i]      = (k, v) [B, H, S, K] of the memory for decoder layer i
    self_kv[i]    = (k, v) [B, H, capacity, K]; positions < ``length`` are filled
    Storage grows in blocks (no per-step reallocation, no up-front 1024-token allocation) and rows
    can be dropped or moved to another cache with :meth:`split` (finished, or set aside).
    """

    FIRST = 16  # positions of the first block: many rows stop within a few ids (an empty YourMT3
    # channel after 1-2), and the first block is what every row of a batch holds at the start
    GROW = 128  # past it storage doubles up to GROW positions, then grows GROW at a time

    @classmethod
    def storage(cls, positions: int) -> int:
        """Positions allocated to hold ``positions``: 16, 32, 64, 128, then multiples of 128."""
        cap = min(cls.FIRST, cls.GROW)
        while cap < min(positions, cls.GROW):
            cap *= 2
        cap = min(cap, cls.GROW)
        return cap if positions <= cap else -(-positions // cls.GROW) * cls.GROW

    bias: Tensor | None = None  # every written position is visible (see StaticKVCache)

    def __init__(self, cross: list[tuple[Tensor, Tensor]]):
        self.cross = cross
        self.self_kv: list[tuple[Tensor, Tensor]] = []
        self.length = 0

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new positions k, v [B, H, t, K] for ``layer``; return all positions so far."""
        t = k.shape[2]
        if layer == len(self.self_kv):
            self.self_kv.append((k.new_empty(0), v.new_empty(0)))
        ck, cv = self.self_kv[layer]
        end = self.length + t
        if ck.numel() == 0 or end > ck.shape[2]:
            cap = self.storage(end)
            nk = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            nv = v.new_empty(nk.shape)
            if self.length:
                nk[:, :, :self.length] = ck[:, :, :self.length]
                nv[:, :, :self.length] = cv[:, :, :self.length]
            ck, cv = nk, nv
            self.self_kv[layer] = (ck, cv)
        ck[:, :, self.length:end] = k
        cv[:, :, self.length:end] = v
        return ck[:, :, :end], cv[:, :, :end]

    @property
    def capacity(self) -> int:
        """Positions the self-attention storage holds before it has to grow."""
        return self.self_kv[0][0].shape[2] if self.self_kv else 0

    def row_bytes(self, positions: int) -> int:
        """Bytes one batch row holds: its cross-attention keys/values and self-attention storage
        for ``positions`` positions (one self-attention layer per cross-attention layer, same
        heads and width, as in every T5 decoder block)."""
        total = 0
        for k, _ in self.cross:
            _, heads, frames, width = k.shape
            total += 2 * heads * (frames + positions) * width * k.element_size()
        return total

    def split(self, keep: Tensor, move: Tensor | None) -> KVCache | None:
        """Keep batch rows ``keep`` here and move rows ``move`` (if given) into a new cache,
        returned. Layer by layer, so the extra memory while copying is one layer's."""
        moved = KVCache([]) if move is not None else None
        for name in ("cross", "self_kv"):
            pairs = getattr(self, name)
            for i, (k, v) in enumerate(pairs):
                if moved is not None:
                    getattr(moved, name).append((k.index_select(0, move), v.index_select(0, move)))
                pairs[i] = (k.index_select(0, keep), v.index_select(0, keep))
        if moved is not None:
            moved.length = self.length
        return moved


class StaticKVCache(KVCache):
    """A :class:`KVCache` whose self-attention storage holds every position from the start, and
    whose ``length`` is a device tensor [1] rather than a Python int.

    self_kv[i] = (k, v) [B, H, positions, K], zeros where nothing is written yet
    bias       = [positions] float32: 0 for the positions written so far, −inf after them
    A decoder step on it reads nothing that changes between steps on the host: the slot it writes,
    the position it embeds and the keys it may see all follow ``length`` on the device. So every
    step runs the same kernels on the same buffers, and one captured CUDA graph can replay them
    (:func:`mt3_demo.models.greedy.static_decode`). The cost: each step attends over all
    ``positions`` (the hidden ones weigh exactly 0), allocated up front (:meth:`grown` makes a
    bigger copy).
    """

    def __init__(self, cross: list[tuple[Tensor, Tensor]], positions: int):
        super().__init__(cross)
        k = cross[0][0]
        self.length = torch.zeros(1, dtype=torch.long, device=k.device)
        self.self_kv = [(ck.new_zeros(ck.shape[0], ck.shape[1], positions, ck.shape[3]),
                         cv.new_zeros(cv.shape[0], cv.shape[1], positions, cv.shape[3])) for ck, cv in cross]
        self.slots = torch.arange(positions, device=k.device)
        self.bias: Tensor | None = None

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the one new position k, v [B, H, 1, K] at ``length``; return the whole storage."""
        if layer == 0:  # the same for every layer of this step
            self.bias = torch.zeros(self.slots.shape, device=k.device).masked_fill(self.slots > self.length,
                                                                                    float("-inf"))
        ck, cv = self.self_kv[layer]
        ck.index_copy_(2, self.length, k)
        cv.index_copy_(2, self.length, v)
        return ck, cv

    def grown(self, positions: int) -> StaticKVCache:
        """The same rows and positions in storage for ``positions`` (a new cache; this one is left
        as it is). Shares ``length`` and the cross-attention keys/values."""
        bigger = StaticKVCache(self.cross, positions)
        for (nk, nv), (k, v) in zip(bigger.self_kv, self.self_kv):
            nk[:, :, :k.shape[2]] = k
            nv[:, :, :v.shape[2]] = v
        bigger.length = self.length
        return bigger


class DecoderBlock(nn.Module):
    """y += SelfAttn_causal(norm(y)); y += CrossAttn(norm(y), memory); y += FFN(norm(y))."""

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.layer = nn.ModuleList([SelfAttentionLayer(dims), CrossAttentionLayer(dims), FeedForwardLayer(dims)])

    def forward(self, y: Tensor, cross_kv: tuple[Tensor, Tensor], cache: KVCache | None, index: int) -> Tensor:
        sa, ca = self.layer[0], self.layer[1]
        h = sa.layer_norm(y)
        k, v = sa.SelfAttention.keys_values(h)
        offset = 0
        if cache is not None:
            offset = cache.length
            k, v = cache.append(index, k, v)
        t = y.shape[1]
        # One new query sees every cached key: no mask needed. Several new queries need the causal
        # mask, shifted by what is already cached.
        mask = None
        if t > 1:
            mask = torch.ones(t, offset + t, dtype=torch.bool, device=y.device).tril(diagonal=offset)
        bias = cache.bias if cache is not None else None
        y = y + sa.SelfAttention.attend(h, k, v, mask, bias)
        y = y + ca.EncDecAttention.attend(ca.layer_norm(y), *cross_kv)
        return y + self.layer[2](y)


# ------------------------------------------------------------------------------------------------
# Stacks


class Encoder(nn.Module):
    """Continuous inputs [B, S, input_dim] → projection → + P[0..S−1] → blocks → final norm → [B, S, d].

    Instantiate it again with another ``num_layers``/``input_dim`` for other encoder stacks (MR-MT3's
    memory encoder: input_dim = d_model, 1 block). ``embed_tokens`` is the input projection, named
    as in the checkpoints (where it is aliased as ``proj`` / ``segmem_proj``).
    """

    def __init__(self, dims: T5Dims, num_layers: int | None = None, input_dim: int | None = None):
        super().__init__()
        self.embed_tokens = nn.Linear(input_dim or dims.input_dim, dims.d_model, bias=False)
        self.pos_emb = SinusoidalPositions(dims.d_model, dims.max_positions)
        n = dims.num_layers if num_layers is None else num_layers
        self.block = nn.ModuleList([EncoderBlock(dims) for _ in range(n)])
        self.final_layer_norm = RMSNorm(dims.d_model, dims.eps)

    def forward(self, x: Tensor) -> Tensor:
        # Keep the residual stream in float32 even under fp16 autocast: T5.1.1 activations overflow
        # fp16 (the norms already compute in float32; the matmuls still run in half precision).
        x = self.embed_tokens(x)
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        x = x + self.pos_emb(0, x.shape[1])
        for block in self.block:
            x = block(x)
        return self.final_layer_norm(x)


class DecoderStack(nn.Module):
    """Decoder blocks + final norm, shared by every T5-style decoder here (MT3, MR-MT3, YourMT3).

    Subclasses only say how tokens and positions become the input vectors, then call :meth:`run`.
    """

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.block = nn.ModuleList([DecoderBlock(dims) for _ in range(dims.num_decoder_layers)])
        self.final_layer_norm = RMSNorm(dims.d_model, dims.eps)

    def cross_keys_values(self, memory: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """Each layer's cross-attention (keys, values) of ``memory``, one layer at a time."""
        for b in self.block:
            yield b.layer[1].EncDecAttention.keys_values(memory)

    def init_cache(self, memory: Tensor) -> KVCache:
        """Cross-attention keys/values of ``memory`` [B, S, d], computed once for a whole decode.

        Stored contiguous per head ([B, H, S, K] in memory order): a step's batched matrix products
        then read them in place, where the strided view of the projection's output would be copied
        whole at every step (the profile's ``copy_``: half of an MT3 step at 30 rows). Layer by
        layer, so only one layer's projections wait for their copy (all of them at once doubled the
        cache's peak: +206 MB instead of +113 MB for 18 MT3 segments).
        """
        return KVCache([(k.contiguous(), v.contiguous()) for k, v in self.cross_keys_values(memory)])

    @staticmethod
    def offset(memory: Tensor | None, cache: KVCache | None) -> int:
        """Position of the first new token: 0 for a full pass, the cache length when incremental."""
        if (memory is None) == (cache is None):
            raise ValueError("pass exactly one of memory or cache")
        return cache.length if cache is not None else 0

    def run(self, y: Tensor, memory: Tensor | None, cache: KVCache | None) -> Tensor:
        """Input vectors y [B, T, d] (positions included) → final hidden states [B, T, d]."""
        cross = cache.cross if cache is not None else self.cross_keys_values(memory)
        for i, (block, keys_values) in enumerate(zip(self.block, cross)):
            y = block(y, keys_values, cache, i)
        if cache is not None:
            cache.length += y.shape[1]
        return self.final_layer_norm(y)


class Decoder(DecoderStack):
    """Token ids [B, T] (+ memory [B, S, d] of any length S) → hidden states [B, T, d].

    Either pass ``memory`` (full, uncached forward: teacher forcing or naive decoding) or a
    :class:`KVCache` from :meth:`init_cache` (incremental: ``tokens`` are the new positions only).
    """

    def __init__(self, dims: T5Dims):
        super().__init__(dims)
        self.embed_tokens = nn.Embedding(dims.vocab_size, dims.d_model)
        self.pos_emb = SinusoidalPositions(dims.d_model, dims.max_positions)

    def forward(self, tokens: Tensor, memory: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        offset = self.offset(memory, cache)
        y = self.embed_tokens(tokens)  # T5: no sqrt(d) scaling
        y = y + self.pos_emb(offset, tokens.shape[1]).to(y.dtype)
        return self.run(y, memory, cache)


class T5(nn.Module):
    """MT3's network: ``encoder`` (features → memory), ``decoder`` + untied ``lm_head`` (→ logits).

    State-dict keys are kunato's minus the aliases in ``ALIASES`` (see :func:`load_t5_state_dict`).
    Subclasses (MR-MT3) add modules and extend ``ALIASES``.
    """

    # checkpoint alias → our canonical key (the two always hold the same tensor in the files)
    ALIASES = {
        "proj.weight": "encoder.embed_tokens.weight",
        "decoder_embed_tokens.weight": "decoder.embed_tokens.weight",
    }

    def __init__(self, dims: T5Dims):
        super().__init__()
        self.dims = dims
        self.encoder = Encoder(dims)
        self.decoder = Decoder(dims)
        self.lm_head = nn.Linear(dims.d_model, dims.vocab_size, bias=False)

    def encode(self, features: Tensor) -> Tensor:
        """[B, S, input_dim] → [B, S, d_model]."""
        return self.encoder(features)

    def logits(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Teacher forcing: decoder input ids [B, T] over memory [B, S, d] → logits [B, T, vocab]."""
        return self.lm_head(self.decoder(tokens, memory=memory))

    def forward(self, features: Tensor, tokens: Tensor) -> Tensor:
        return self.logits(tokens, self.encode(features))

    def set_position_formula(self, formula: str) -> None:
        """"checkpoint" (stored inv_freq, kunato) or "magenta" (Magenta's closed form) for every table."""
        for m in self.modules():
            if isinstance(m, SinusoidalPositions):
                m.rebuild(formula)


# ------------------------------------------------------------------------------------------------
# Checkpoints


def fold_aliases(state_dict: Mapping[str, Tensor], aliases: Mapping[str, str], what: str) -> dict[str, Tensor]:
    """Drop each alias key after checking it holds the same values as its canonical key.

    Keys absent on either side are left for the strict key check to report.
    """
    from ..checkpoints import CheckpointError

    out = dict(state_dict)
    for alias, canonical in aliases.items():
        if alias in out and canonical in out:
            a, c = out[alias], out[canonical]
            if a.shape != c.shape or not torch.equal(a, c):
                raise CheckpointError(f"{what}: {alias} and {canonical} should be the same tensor but differ.")
            del out[alias]
    return out


def expected_keys(model: nn.Module, aliases: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    """The full key → shape set a checkpoint must have: the model's state dict plus the aliases."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for alias, canonical in aliases.items():
        shapes[alias] = shapes[canonical]
    return shapes


def load_t5_state_dict(model: T5, state_dict: Mapping[str, Tensor], what: str, assign: bool = False) -> None:
    """Strict load: every key (aliases and ``inv_freq`` buffers included), right shapes, nothing extra.

    Raises CheckpointError naming the missing, unexpected and mis-shaped keys. ``assign=True`` makes
    the checkpoint's tensors the parameters (no copy): build the model on the meta device first, so
    loading never holds two copies of the weights.
    """
    from ..checkpoints import assignable, check_state_dict

    aliases = type(model).ALIASES
    check_state_dict(expected_keys(model, aliases), state_dict, what)
    state = fold_aliases(state_dict, aliases, what)
    model.load_state_dict(assignable(model, state) if assign else state, strict=True, assign=assign)


def dims_from_state_dict(config: Mapping[str, Any], state_dict: Mapping[str, Tensor],
                         max_positions: int = 2048) -> T5Dims:
    """Dims from config.json, with the input width read from the projection (= mel bins)."""
    proj = state_dict.get("proj.weight", state_dict.get("encoder.embed_tokens.weight"))
    return T5Dims.from_config(config, input_dim=None if proj is None else int(proj.shape[1]),
                              max_positions=max_positions)
