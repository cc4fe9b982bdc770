"""YourMT3+'s encoder: the residual conv pre-encoder and the Perceiver-TF with MoE feed-forwards.

docs/models.md#yourmt3-encoder. Shapes: B segments, T = 110 frames, F frequency bins, C conv channels (the key/value
tokens of the spectral cross-attention), K = 26 latents, D latent width, H heads, E experts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..t5 import RMSNorm


@dataclass(frozen=True)
class EncoderDims:
    """Sizes of the pre-encoder + Perceiver-TF (defaults: the YPTF.MoE+Multi checkpoint)."""

    conv_channels: int = 128  # C; also the number of SCA key/value tokens
    kv_dim: int = 128  # 1024 bins / 8 after three (1, 2) poolings
    num_latents: int = 26  # K
    d_latent: int = 128  # D
    num_heads: int = 8  # not stored in the checkpoint: upstream's PerceiverTFConfig default
    num_blocks: int = 3
    num_local: int = 2  # latent self-attention layers per block
    num_temporal: int = 2  # temporal self-attention layers per block
    num_experts: int = 8
    top_k: int = 2
    d_expert: int = 512  # ff_widening_factor · D
    norm: str = "layer_norm"  # "layer_norm" (nn.LayerNorm, with bias) or "rms_norm" (weight only)
    eps: float = 1e-5


def make_norm(kind: str, d: int, eps: float) -> nn.Module:
    if kind == "layer_norm":
        return nn.LayerNorm(d, eps=eps)
    if kind == "rms_norm":
        return RMSNorm(d, eps=eps)  # HF T5LayerNorm: the same formula as the shared T5 norm
    raise ValueError(f"unknown norm type {kind!r}")


# ------------------------------------------------------------------------------------------------
# Pre-encoder


class ResBlock(nn.Module):
    """relu(BN(conv(relu(BN(conv(x))))) + shortcut(x)) → average pairs of frequency bins.

    [B, c_in, T, F] → [B, c_out, T, F/2], returned channels-last (NHWC in memory). The 1×1 shortcut
    conv (with bias) exists only when the channel count changes (the first block, 1 → C).

    Inference only: each eval-mode BatchNorm is folded into the conv before it (``folded``) and the
    convolutions run channels-last — exact algebra that changes only float32 rounding (summation
    order), like running on another CPU; tests/test_speed_paths.py bounds the difference.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError("ResBlock folds its BatchNorms (running statistics): inference only, call .eval()")
        w1, b1 = folded(self.conv1, self.bn1)
        w2, b2 = folded(self.conv2, self.bn2)
        if self.shortcut is not None:
            b2 = b2 + self.shortcut.bias  # the shortcut's bias joins the second conv's
        h = conv3x3(conv3x3(x, w1, b1).relu_(), w2, b2)
        if self.shortcut is None:
            h += x
        else:  # 1×1 conv without its bias = a product over channels, added in place (NHWC rows)
            c_out, c_in = self.shortcut.weight.shape[:2]
            nhwc = h.permute(0, 2, 3, 1)
            nhwc.view(-1, c_out).addmm_(x.permute(0, 2, 3, 1).reshape(-1, c_in),
                                        self.shortcut.weight.view(c_out, c_in).t())
        return mean_of_bin_pairs(h.relu_())


def folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """conv (no bias) then eval BatchNorm as one conv: weight·s, bias β − μ·s, s = γ / √(σ² + ε)."""
    s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return conv.weight * s[:, None, None, None], bn.bias - bn.running_mean * s


def conv3x3(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """3×3 convolution, padding 1, channels-last: x [B, c_in, T, F], w [c_out, c_in, 3, 3] → [B, c_out, T, F].

    One input channel (the spectrogram) is a GEMM over the 9 shifted copies of the padded input
    (im2col, k = 9): oneDNN's direct kernel is 1.5–2× slower there. Otherwise oneDNN, channels-last.
    """
    if x.shape[1] != 1:
        return F.conv2d(x.contiguous(memory_format=torch.channels_last),
                        w.contiguous(memory_format=torch.channels_last), b, padding=1)
    bsz, _, t, f = x.shape
    xp = F.pad(x[:, 0], (1, 1, 1, 1))  # [B, T+2, F+2]
    cols = torch.stack([xp[:, i:i + t, j:j + f] for i in range(3) for j in range(3)], dim=-1)  # [B, T, F, 9]
    out = torch.addmm(b, cols.view(-1, 9), w.reshape(len(w), 9).t())  # [B·T·F, c_out]
    return out.view(bsz, t, f, -1).permute(0, 3, 1, 2)  # NHWC memory, NCHW view


def mean_of_bin_pairs(h: Tensor) -> Tensor:
    """avg_pool2d(h, (1, 2)): [..., F] → [..., F/2], bin pairs averaged as (a + b) / 2.

    The same values as avg_pool2d (which sums the pair, then divides by 2; ×0.5 is the same
    correctly rounded operation), without its pass over a copy; the result keeps h's memory format.
    """
    if h.shape[-1] % 2:
        return F.avg_pool2d(h, (1, 2))  # odd width: avg_pool2d drops the last bin
    return (h[..., 0::2] + h[..., 1::2]).mul_(0.5)


class PreEncoder(nn.Module):
    """Spectrogram [B, T, 1024] → [B, T, 128 bins, C channels] (upstream's layout ``b t f c``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.blocks = nn.ModuleList([ResBlock(1, channels), ResBlock(channels, channels),
                                     ResBlock(channels, channels)])

    def forward(self, x: Tensor) -> Tensor:
        h = x[:, None]  # [B, 1, T, F]
        for block in self.blocks:
            h = block(h)
        return h.permute(0, 2, 3, 1)  # [B, C, T, F/8] → [B, T, F/8, C]


# ------------------------------------------------------------------------------------------------
# Rotary embedding, as upstream applies it


class Rotary(nn.Module):
    """Rotary position signal on the first ``2·len(freqs)`` dims of every head, queries only.

    Upstream quirks (each kept on purpose):
    * the rotary width comes from the *number of heads* (8 // 2 = 4 dims with partial RoPE), not
      from the head size, so only dims 0..3 of each 16-dim head rotate;
    * only queries are rotated (``rope_apply_to_keys`` False): an absolute, query-side signal;
    * "pixel" positions are linspace(−1, 1, n) over the attended axis; "lang" positions are 0..n−1.
    ``freqs`` is loaded from the checkpoint (pixel: [π, 5π]; lang: [1, 0.01]).
    """

    def __init__(self, kind: str, num_freqs: int = 2):
        super().__init__()
        if kind not in ("pixel", "lang"):
            raise ValueError(f"unknown rotary type {kind!r}")
        self.kind = kind
        self.freqs = nn.Parameter(torch.zeros(num_freqs), requires_grad=False)

    def forward(self, q: Tensor) -> Tensor:
        """q [N, H, S, hd] → the same with dims 0..2·len(freqs)−1 of each head rotated by position."""
        n = q.shape[-2]
        if self.kind == "pixel":
            pos = torch.linspace(-1.0, 1.0, n, device=q.device, dtype=torch.float32)
        else:
            pos = torch.arange(n, device=q.device, dtype=torch.float32)
        angles = pos[:, None] * self.freqs.float()[None, :]  # [S, R/2]: one angle per pair
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        r = 2 * self.freqs.numel()
        x = q[..., :r].unflatten(-1, (-1, 2))  # adjacent pairs (x0, x1), (x2, x3)
        x0, x1 = x[..., 0], x[..., 1]
        rot = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2)
        return torch.cat([rot, q[..., r:]], dim=-1)


# ------------------------------------------------------------------------------------------------
# Attention and mixture-of-experts feed-forward


class PerceiverAttention(nn.Module):
    """Pre-norm multi-head attention with biases and a query residual: dense(attn(norm(h), kv)) + h.

    Self-attention when ``kv_dim`` is None (keys/values from the normed queries), cross-attention
    otherwise (keys/values from ``layernorm2(x)``, x of width ``kv_dim``). Upstream keys:
    ``<name>.self.{layernorm1,layernorm2,query,key,value}``, ``<name>.output.dense``.
    """

    def __init__(self, d: int, num_heads: int, norm: str, eps: float, kv_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.layernorm1 = make_norm(norm, d, eps)
        self.layernorm2 = make_norm(norm, kv_dim, eps) if kv_dim is not None else None
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(kv_dim or d, d)
        self.value = nn.Linear(kv_dim or d, d)
        self.dense = nn.Linear(d, d)

    def split(self, x: Tensor) -> Tensor:
        """[N, S, D] → [N, H, S, D/H]."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, h: Tensor, rotary: Rotary, x: Tensor | None = None) -> Tensor:
        """h [N, S, D] (queries), x [N, S_kv, kv_dim] for cross-attention → [N, S, D]."""
        hn = self.layernorm1(h)
        kv = self.layernorm2(x) if self.layernorm2 is not None else hn
        q = rotary(self.split(self.query(hn)))
        k, v = self.split(self.key(kv)), self.split(self.value(kv))
        out = F.scaled_dot_product_attention(q, k, v)  # 1/sqrt(head dim), no mask
        return self.dense(out.transpose(1, 2).flatten(2)) + h


class Expert(nn.Module):
    """w2(silu(w1·z) ⊙ gate·z) — note upstream's naming: the activation is on ``w1``."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)
        self.gate = nn.Linear(d, hidden, bias=False)

    def forward(self, z: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(z)) * self.gate(z))


class MoE(nn.Module):
    """Sparse mixture of experts (Mixtral style): top-k of a float32 softmax router, renormalised.

    Every token goes to its k experts (no capacity limit, no token dropping). Only the routed
    tokens are run through each expert, so the cost is k/E of a dense evaluation.
    """

    def __init__(self, d: int, hidden: int, num_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(d, num_experts, bias=False)
        self.experts = nn.ModuleList([Expert(d, hidden) for _ in range(num_experts)])
        self.record_routing = False
        self.last_routing: Tensor | None = None  # [tokens, k] expert ids, when record_routing

    def route(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z [N, D] → (weights [N, k] in z's dtype, expert ids [N, k]); ties as torch.topk breaks them."""
        p = F.softmax(self.gate(z).float(), dim=-1)
        w, idx = torch.topk(p, self.top_k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        return w.to(z.dtype), idx

    def forward(self, x: Tensor) -> Tensor:
        """x [..., D] → [..., D]: Σ over each token's k experts of weight · expert(token).

        Grouped dispatch: the N·k (token, expert) pairs are sorted by expert once (stable, so
        tokens stay in order within an expert), gathered with one index_select, each expert runs
        on its contiguous slice, and the weighted results go back to (token, slot) order with one
        scatter; then the k slots are summed. Each expert sees exactly the rows, in the order, that
        a per-expert ``nonzero`` loop would give it, so its outputs are identical; for k ≤ 2 the
        sum c₀ + c₁ equals the loop's (0 + c_a) + c_b exactly (float addition is commutative).
        """
        shape = x.shape
        z = x.reshape(-1, shape[-1])
        w, idx = self.route(z)
        if self.record_routing:
            self.last_routing = idx.detach().cpu()
        n, k = idx.shape
        pair_expert = idx.reshape(-1)  # pair p = token p // k, slot p % k
        order = torch.argsort(pair_expert, stable=True)
        counts = torch.bincount(pair_expert, minlength=len(self.experts)).tolist()
        rows = z.index_select(0, order // k)
        outs = [expert(part) for expert, part in zip(self.experts, rows.split(counts)) if part.shape[0]]
        weighted = torch.cat(outs).mul_(w.reshape(-1, 1).index_select(0, order))
        per_pair = torch.empty_like(weighted)
        per_pair[order] = weighted
        return per_pair.view(n, k, -1).sum(1).view(shape)


class PerceiverLayer(nn.Module):
    """a = attention(h) (residual inside); y = a + MoE(norm(a))."""

    def __init__(self, dims: EncoderDims):
        super().__init__()
        self.attention = PerceiverAttention(dims.d_latent, dims.num_heads, dims.norm, dims.eps)
        self.layernorm = make_norm(dims.norm, dims.d_latent, dims.eps)
        self.mlp = MoE(dims.d_latent, dims.d_expert, dims.num_experts, dims.top_k)

    def forward(self, h: Tensor, rotary: Rotary) -> Tensor:
        a = self.attention(h, rotary)
        return a + self.mlp(self.layernorm(a))


class PerceiverBlock(nn.Module):
    """Spectral cross-attention → local (latent) layers → temporal layers. [B, T, K, D] → same."""

    def __init__(self, dims: EncoderDims):
        super().__init__()
        self.spectral_cross_attention = PerceiverAttention(dims.d_latent, dims.num_heads, dims.norm,
                                                           dims.eps, kv_dim=dims.kv_dim)
        self.local_transformer = nn.ModuleList([PerceiverLayer(dims) for _ in range(dims.num_local)])
        self.temporal_transformer = nn.ModuleList([PerceiverLayer(dims) for _ in range(dims.num_temporal)])

    def forward(self, h: Tensor, x: Tensor, rope_sca: Rotary, rope_latent: Rotary,
                rope_temporal: Rotary) -> Tensor:
        """h [B, T, K, D] latents, x [B, T, C, kv_dim] channel tokens → [B, T, K, D]."""
        b, t, k, d = h.shape
        # Each frame on its own: the K latents attend to the C channel tokens, then to each other.
        h = self.spectral_cross_attention(h.reshape(b * t, k, d), rope_sca, x.reshape(b * t, *x.shape[2:]))
        for layer in self.local_transformer:
            h = layer(h, rope_latent)
        # Each latent on its own: attention along the T frames.
        h = h.view(b, t, k, d).transpose(1, 2).reshape(b * k, t, d)
        for layer in self.temporal_transformer:
            h = layer(h, rope_temporal)
        return h.view(b, k, t, d).transpose(1, 2)


class PerceiverTF(nn.Module):
    """Pre-encoder output [B, T, F', C] → latents [B, T, K, D] (no final norm, as upstream).

    With ``attention_to_channel`` the SCA's key/value tokens are the C conv channels, each a
    vector over the F' pooled bins. The three rotary modules are shared by all blocks (upstream
    stores their ``freqs`` once per attention module too; the loader folds those aliases).
    """

    def __init__(self, dims: EncoderDims, rotary_freqs: int = 2):
        super().__init__()
        self.dims = dims
        self.latents = nn.Parameter(torch.zeros(dims.num_latents, dims.d_latent))
        self.rotary_emb_sca = Rotary("pixel", rotary_freqs)
        self.rotary_emb_latent = Rotary("pixel", rotary_freqs)
        self.rotary_emb_temporal = Rotary("lang", rotary_freqs)
        self.blocks = nn.ModuleList([PerceiverBlock(dims) for _ in range(dims.num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        # [B, T, F', C] → [B, T, C, F']: tokens are channels; made contiguous once for all blocks
        x = x.transpose(2, 3).contiguous()
        b, t = x.shape[:2]
        h = self.latents.to(x.dtype).expand(b, t, *self.latents.shape)
        for block in self.blocks:
            h = block(h, x, self.rotary_emb_sca, self.rotary_emb_latent, self.rotary_emb_temporal)
        return h

    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]
