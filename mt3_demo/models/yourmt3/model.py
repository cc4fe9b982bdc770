"""The whole YourMT3+ network (YPTF.MoE+Multi), its configuration read from a checkpoint, and the
strict mapping between upstream's state-dict keys and ours.

    segments [B, 32767] ─ spectrogram ─► [B, 110, 1024] ─ pre_encoder ─► [B, 110, 128, C]
      ─ encoder (Perceiver-TF) ─► [B, 110, 26, D] ─ pre_decoder ─► memory [B, 13, 110, d]
      ─ decoder (one T5 stack, 13·B rows) + lm_head ─► ids [B][13][≤ max_tokens]
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ...checkpoints import CheckpointError, assignable, check_state_dict, checkpoint_errors, empty_weights
from ..t5 import T5Dims
from .checkpoint import read_checkpoint
from .decoder import ChannelProjection, LMHead, MultiChannelDecoder, greedy_decode
from .encoder import EncoderDims, PerceiverTF, PreEncoder
from .features import LogSpectrogram
from .tokenizer import NUM_CHANNELS, VOCAB_SIZE

NORM_KEY = "encoder.blocks.0.spectral_cross_attention.self.layernorm1.bias"


@dataclass(frozen=True)
class YourMT3Dims:
    encoder: EncoderDims = EncoderDims()
    decoder: T5Dims = T5Dims(d_model=512, num_heads=6, d_kv=64, d_ff=1024, num_layers=0,
                             num_decoder_layers=8, vocab_size=VOCAB_SIZE, eps=1e-6, max_positions=1034)
    num_channels: int = NUM_CHANNELS
    rotary_freqs: int = 2  # (8 heads // 2 rotary dims with partial RoPE) // 2


class YourMT3(nn.Module):
    def __init__(self, dims: YourMT3Dims):
        super().__init__()
        self.dims = dims
        e, d = dims.encoder, dims.decoder
        self.spectrogram = LogSpectrogram()
        self.pre_encoder = PreEncoder(e.conv_channels)
        self.encoder = PerceiverTF(e, dims.rotary_freqs)
        self.pre_decoder = ChannelProjection(e.d_latent, d.d_model, dims.num_channels)
        self.decoder = MultiChannelDecoder(d)
        self.embed_tokens = nn.Embedding(d.vocab_size, d.d_model)
        self.lm_head = LMHead(d.d_model, d.vocab_size)

    def encode(self, spec: Tensor) -> Tensor:
        """Spectrogram [B, 110, 1024] → channel memories [B, 13, 110, d]."""
        return self.pre_decoder(self.encoder(self.pre_encoder(spec)))

    def decode_hidden(self, ids: Tensor, memory: Tensor) -> Tensor:
        """Teacher forcing: ids [B, C, L] over memory [B, C, T, d] → final hidden [B, C, L, d] (causal)."""
        b, c, l = ids.shape
        h = self.decoder(self.embed_tokens(ids.reshape(b * c, l)), memory=memory.flatten(0, 1))
        return h.view(b, c, l, -1)

    def logits(self, ids: Tensor, memory: Tensor) -> Tensor:
        """Inference-path logits [B, C, L, vocab] (hidden scaled once by d^-0.5)."""
        return self.lm_head(self.decode_hidden(ids, memory))

    @torch.inference_mode()
    def generate(self, memory: Tensor, max_tokens: int, on_step: Callable[[int, int], None] | None = None,
                 stop_at_eos: bool = True, cache_budget: int | None = None,
                 static: bool | None = None) -> list[list[list[int]]]:
        """Greedy ids for every channel of every segment, all as one batch → tokens[b][c]
        (``cache_budget``: bytes the rows' caches may hold together, see :func:`mt3_demo.models.greedy.greedy_decode`)."""
        b, c = memory.shape[:2]
        rows = greedy_decode(self.embed_tokens, self.decoder, self.lm_head, memory.flatten(0, 1),
                             max_tokens, on_step=on_step, stop_at_eos=stop_at_eos, cache_budget=cache_budget,
                             static=static)
        return [rows[i * c:(i + 1) * c] for i in range(b)]


# ------------------------------------------------------------------------------------------------
# Keys: ours ↔ upstream's (``ckpt['state_dict']``, no ``model.`` prefix)

_ATTN = r"(spectral_cross_attention|attention)"
_TO_UPSTREAM = [  # (our key pattern, upstream replacement), applied in order, first match wins
    (r"^spectrogram\.window$", "spectrogram.stft.window"),
    (r"^pre_encoder\.", "pre_encoder.0."),
    (r"^encoder\.latents$", "encoder.latent_array.latents"),
    (rf"^(encoder\..*\.{_ATTN})\.(layernorm1|layernorm2|query|key|value)\.", r"\1.self.\3."),
    (rf"^(encoder\..*\.{_ATTN})\.dense\.", r"\1.output.dense."),
    (r"^pre_decoder\.linear\.", "pre_decoder.0.linear."),
    (r"^decoder\.", "decoder.decoder."),
]


def upstream_key(key: str) -> str:
    for pattern, repl in _TO_UPSTREAM:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def rotary_aliases(model: YourMT3) -> dict[str, str]:
    """Upstream lists each shared rotary ``freqs`` once per attention module: alias → canonical key."""
    out = {}
    for i, block in enumerate(model.encoder.blocks):
        out[f"encoder.blocks.{i}.spectral_cross_attention.self.rotary_emb.freqs"] = "encoder.rotary_emb_sca.freqs"
        for kind, layers in (("local", block.local_transformer), ("temporal", block.temporal_transformer)):
            canonical = "encoder.rotary_emb_latent.freqs" if kind == "local" else "encoder.rotary_emb_temporal.freqs"
            for j in range(len(layers)):
                out[f"encoder.blocks.{i}.{kind}_transformer.{j}.attention.self.rotary_emb.freqs"] = canonical
    return out


def expected_upstream_shapes(model: YourMT3) -> dict[str, tuple[int, ...]]:
    shapes = {upstream_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    for alias, canonical in rotary_aliases(model).items():
        shapes[alias] = shapes[canonical]
    return shapes


def load_upstream_state_dict(model: YourMT3, sd: Mapping[str, Tensor], what: str, assign: bool = False) -> None:
    """Strict: every upstream key present with the right shape, nothing extra (``pitchshift.*`` keys of
    the "PS" checkpoints, a training-only layer, are dropped first, as the Space does).

    ``assign=True`` makes the checkpoint's tensors the model's (no copy; see
    :func:`~mt3_demo.checkpoints.assignable`): build the model under ``empty_weights()`` first."""
    sd = {k: v for k, v in sd.items() if "pitchshift" not in k}
    check_state_dict(expected_upstream_shapes(model), sd, what)
    sd = dict(sd)
    for alias, canonical in rotary_aliases(model).items():
        if not torch.equal(sd[alias], sd[canonical]):
            raise CheckpointError(f"{what}: {alias} should equal {canonical} (one shared tensor) but differs.")
        del sd[alias]
    ours = {upstream_key(k): k for k in model.state_dict()}
    state = {ours[k]: v for k, v in sd.items()}
    model.load_state_dict(assignable(model, state) if assign else state, strict=True, assign=assign)


# ------------------------------------------------------------------------------------------------
# Configuration from the checkpoint


def _get(cfg: Mapping[str, Any] | None, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(cfg, Mapping) or p not in cfg:
            return default
        cfg = cfg[p]
    return cfg


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def dims_from_checkpoint(sd: Mapping[str, Tensor], hparams: Mapping[str, Any], what: str) -> YourMT3Dims:
    """Sizes from tensor shapes; what shapes cannot tell (heads, d_kv, top-k, norm type) from
    ``hyper_parameters['model_cfg']``, else upstream's defaults. Refuses variants this code does not
    implement, and a norm type that contradicts the keys."""
    mc = hparams.get("model_cfg") if isinstance(hparams.get("model_cfg"), Mapping) else {}
    ac = hparams.get("audio_cfg") if isinstance(hparams.get("audio_cfg"), Mapping) else {}
    ptf = _get(mc, "encoder", "perceiver-tf", default={}) or {}
    mt5 = _get(mc, "decoder", "multi-t5", default={}) or {}

    def need(key: str) -> Tensor:
        if key not in sd:
            raise CheckpointError(f"{what} is not a YourMT3 YPTF.MoE+Multi checkpoint: key {key} is missing.")
        return sd[key]

    unsupported = []
    for name, value, want in [
        ("encoder_type", mc.get("encoder_type"), "perceiver-tf"),
        ("decoder_type", mc.get("decoder_type"), "multi-t5"),
        ("pre_encoder_type", mc.get("pre_encoder_type"), "conv"),
        ("pre_decoder_type", mc.get("pre_decoder_type"), "mc_shared_linear"),
        ("ff_layer_type", ptf.get("ff_layer_type"), "moe"),
        ("hidden_act", ptf.get("hidden_act"), "silu"),
        ("position_encoding_type", ptf.get("position_encoding_type"), "rope"),
        ("attention_to_channel", ptf.get("attention_to_channel"), True),
        ("sca_use_query_residual", ptf.get("sca_use_query_residual"), True),
        ("rotary_apply_to_keys", ptf.get("rotary_apply_to_keys", ptf.get("rope_apply_to_keys")), False),
        ("rotary_type_sca", ptf.get("rotary_type_sca"), "pixel"),
        ("rotary_type_latent", ptf.get("rotary_type_latent"), "pixel"),
        ("rotary_type_temporal", ptf.get("rotary_type_temporal"), "lang"),
        ("audio codec", ac.get("codec"), "spec"),
        ("hop_length", ac.get("hop_length"), 300),
        ("n_fft", ac.get("n_fft"), 2048),
        ("input_frames", ac.get("input_frames"), 32767),
        ("sample_rate", ac.get("sample_rate"), 16000),
    ]:
        if value is not None and value != want:
            unsupported.append(f"{name}={value!r} (supported: {want!r})")
    if unsupported:
        raise CheckpointError(f"{what} uses a YourMT3 variant this adapter does not implement: "
                              + ", ".join(unsupported) + ". Supported: the YPTF.MoE+Multi checkpoints.")

    # LayerNorm vs RMSNorm (spec §5.6): the keys decide; the hyper-parameters must agree.
    norm = "layer_norm" if NORM_KEY in sd else "rms_norm"
    hp_norm = ptf.get("layer_norm_type")
    if hp_norm is not None and hp_norm != norm:
        raise CheckpointError(
            f"{what}: its hyper-parameters say layer_norm_type={hp_norm!r} but its state dict "
            + ("has" if norm == "layer_norm" else "lacks")
            + f" the LayerNorm bias {NORM_KEY} (i.e. it holds {norm!r} weights). Refusing to guess which "
            "one the model was trained with.")

    latents = need("encoder.latent_array.latents")
    sca_key = need("encoder.blocks.0.spectral_cross_attention.self.key.weight")
    w1 = need("encoder.blocks.0.local_transformer.0.mlp.experts.0.w1.weight")
    gate = need("encoder.blocks.0.local_transformer.0.mlp.gate.weight")
    num_heads = int(ptf.get("num_self_attention_heads") or ptf.get("num_heads") or 8)
    enc = EncoderDims(
        conv_channels=int(need("pre_encoder.0.blocks.0.conv1.weight").shape[0]),
        kv_dim=int(sca_key.shape[1]),
        num_latents=int(latents.shape[0]),
        d_latent=int(latents.shape[1]),
        num_heads=num_heads,
        num_blocks=_count(sd, r"^encoder\.blocks\.(\d+)\.spectral_cross_attention\."),
        num_local=_count(sd, r"^encoder\.blocks\.0\.local_transformer\.(\d+)\."),
        num_temporal=_count(sd, r"^encoder\.blocks\.0\.temporal_transformer\.(\d+)\."),
        num_experts=int(gate.shape[0]),
        top_k=int(ptf.get("moe_topk") or 2),
        d_expert=int(w1.shape[0]),
        norm=norm,
        eps=1e-5,
    )
    if enc.d_latent % num_heads:
        raise CheckpointError(f"{what}: latent width {enc.d_latent} is not divisible by {num_heads} heads.")

    freqs = need("encoder.rotary_emb_sca.freqs")
    partial = ptf.get("rope_partial_pe")  # NOT ``rotary_partial_pe``: a second, unused flag (spec §5.4)
    if partial is not None:
        rdim = num_heads // 2 if partial else num_heads
        if freqs.numel() != rdim // 2:
            raise CheckpointError(f"{what}: rope_partial_pe={partial} implies {rdim // 2} rotary frequencies "
                                  f"but the checkpoint stores {freqs.numel()}.")

    embed = need("embed_tokens.weight")
    q = need("decoder.decoder.block.0.layer.0.SelfAttention.q.weight")
    d_kv = int(mt5.get("d_kv") or 64)  # upstream's multi-t5 default when the config does not set it
    dec_heads = int(mt5.get("num_heads") or q.shape[0] // d_kv)
    if dec_heads * d_kv != q.shape[0]:
        source = "its hyper_parameters" if mt5 else "upstream's defaults (no hyper_parameters in the file)"
        raise CheckpointError(f"{what}: decoder attention width {q.shape[0]} does not fit {dec_heads} heads "
                              f"× d_kv {d_kv} taken from {source}.")
    dec = T5Dims(
        d_model=int(embed.shape[1]),
        num_heads=dec_heads,
        d_kv=d_kv,
        d_ff=int(need("decoder.decoder.block.0.layer.2.DenseReluDense.wi_0.weight").shape[0]),
        num_layers=0,
        num_decoder_layers=_count(sd, r"^decoder\.decoder\.block\.(\d+)\."),
        vocab_size=int(embed.shape[0]),
        eps=1e-6,
        max_positions=int(need("decoder.decoder.additive_pe.weight").shape[0]),
    )
    if dec.vocab_size != VOCAB_SIZE:
        raise CheckpointError(f"{what}: vocabulary of {dec.vocab_size} ids, expected {VOCAB_SIZE} "
                              "(task mc13_full_plus_256).")
    num_channels = int(mt5.get("num_channels") or NUM_CHANNELS)
    if num_channels != NUM_CHANNELS or enc.num_latents != 2 * NUM_CHANNELS:
        raise CheckpointError(f"{what}: {num_channels} decoder channels / {enc.num_latents} latents; "
                              f"this adapter decodes {NUM_CHANNELS} channels from {2 * NUM_CHANNELS} latents.")
    return YourMT3Dims(encoder=enc, decoder=dec, num_channels=num_channels, rotary_freqs=int(freqs.numel()))


def load_model(path: Path) -> tuple[YourMT3, dict[str, Any]]:
    """Checkpoint file → (float32 CPU model in eval mode, hyper_parameters)."""
    path = Path(path)
    what = f"YourMT3 checkpoint {path.name}"
    sd, hp = read_checkpoint(path)  # tensors checked there (dtype, emptiness, finiteness)
    with checkpoint_errors(what):
        dims = dims_from_checkpoint(sd, hp, what)
        with empty_weights():  # no random init: the checkpoint's tensors become the parameters
            model = YourMT3(dims)
        load_upstream_state_dict(model, sd, what, assign=True)
    return model.eval(), hp
