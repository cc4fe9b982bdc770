"""YourMT3+ speed: our batched, KV-cached decoding vs the naive per-segment, per-channel, uncached one.

A full-size checkpoint is made from the state-dict manifest (655 keys, 47.1 M parameters) with random
weights and written in the Lightning layout, so the real loader runs too. Both paths decode exactly
``--tokens`` ids per channel (EOS ignored: random weights end channels arbitrarily), so they do equal
work in tokens; both run the identical encoder. Ratios are taken within this one run.

    python bench/bench_yourmt3.py [--seconds 4] [--tokens 12] [--threads 2] [--device cpu]
    python bench/bench_yourmt3.py --encoder-ab [--seconds 6] [--threads 1]

``--encoder-ab`` instead times the encoder as it is against its plain form in the same run (the
per-expert ``nonzero`` loop with ``index_add_``, out-of-place ReLU/add and ``avg_pool2d``: the code
before the grouped dispatch), alternating them ``--repeat`` times, and checks the outputs are equal.

Naive baseline: for each segment, spectrogram + encoder on that segment alone, then for each of the 13
channels a greedy loop that re-runs the decoder over the whole prefix (and recomputes the
cross-attention keys/values of its memory) at every step.
Ours: all segments' spectrograms/encoder in one batch, then all segments × 13 channels as one decoder
batch, one new position per step, self-attention keys/values cached, cross-attention ones computed once.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch.nn.functional as F  # noqa: E402

from bench.naive import moe_loop, naive_decode  # noqa: E402
from mt3_demo.models.yourmt3 import encoder as enc_mod  # noqa: E402
from mt3_demo.models.yourmt3.features import SAMPLE_RATE, segment_audio  # noqa: E402
from mt3_demo.models.yourmt3.model import load_model  # noqa: E402

MANIFEST = ROOT / "tests" / "fixtures" / "yourmt3" / "ymt3_ckpt_manifest.json"


def random_checkpoint(manifest: Path, out: Path, seed: int = 0) -> Path:
    """Random weights with the manifest's keys/shapes; upstream's constants where they matter."""
    g = torch.Generator().manual_seed(seed)
    keys = json.loads(manifest.read_text())["keys"]
    sd = {}
    shared_freqs = {"sca": torch.tensor([math.pi, 5 * math.pi]), "latent": torch.tensor([math.pi, 5 * math.pi]),
                    "temporal": torch.tensor([1.0, 0.01])}
    for k in keys:
        name, shape = k["key"], tuple(k["shape"])
        if k["dtype"] == "int64":
            sd[name] = torch.zeros(shape, dtype=torch.int64)
        elif name.endswith("stft.window"):
            sd[name] = torch.hann_window(shape[0])
        elif name.endswith("freqs"):
            kind = ("sca" if "sca" in name or "spectral" in name else
                    "temporal" if "temporal" in name else "latent")
            sd[name] = shared_freqs[kind].clone()
        elif name.endswith("additive_pe.weight"):
            p = torch.arange(shape[0], dtype=torch.float32)[:, None]
            j = torch.arange(shape[1] // 2, dtype=torch.float32)[None, :]
            a = p / 10000 ** (2 * j / shape[1])
            sd[name] = torch.cat([a.sin(), a.cos()], dim=1)
        elif name.endswith("running_var"):
            sd[name] = 1 + 0.2 * torch.rand(shape, generator=g)
        elif len(shape) == 1:
            base = 0.0 if (name.endswith("bias") or name.endswith("running_mean")) else 1.0
            sd[name] = base + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = int(np.prod(shape[1:]))
            scale = 1.0 if name in ("embed_tokens.weight", "encoder.latent_array.latents") else fan_in ** -0.5
            sd[name] = scale * torch.randn(shape, generator=g)
    sd["lm_head.lm_head.weight"] *= 8  # peakier logits: a less degenerate greedy path
    path = out / "last.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": {}}, path)
    return path


def plain_resblock(self, x):
    """The pre-encoder block out of place, pooled with avg_pool2d (the previous code)."""
    h = F.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    h = F.relu(h + (self.shortcut(x) if self.shortcut is not None else x))
    return F.avg_pool2d(h, (1, 2))


def encoder_ab(model, segments, repeat: int) -> None:
    """Encoder now vs its plain form, alternating, fastest of ``repeat`` each; outputs compared."""
    spec = model.spectrogram(segments)
    fast = (enc_mod.MoE.forward, enc_mod.ResBlock.forward)
    plain = (moe_loop, plain_resblock)
    best = {"now": float("inf"), "plain": float("inf")}
    outs = {}
    for _ in range(repeat):
        for name, (moe, res) in (("plain", plain), ("now", fast)):
            enc_mod.MoE.forward, enc_mod.ResBlock.forward = moe, res
            try:
                parts = {}
                t0 = time.perf_counter()
                parts["pre"] = model.pre_encoder(spec)
                t1 = time.perf_counter()
                parts["out"] = model.pre_decoder(model.encoder(parts["pre"]))
                t2 = time.perf_counter()
            finally:
                enc_mod.MoE.forward, enc_mod.ResBlock.forward = fast
            if t2 - t0 < best[name]:
                best[name] = t2 - t0
                best[name + " pre-encoder"], best[name + " perceiver"] = t1 - t0, t2 - t1
            outs[name] = parts["out"]
    same = torch.equal(outs["now"], outs["plain"])
    print(json.dumps({k: round(v, 3) for k, v in best.items()}, indent=1))
    print(f"\nYourMT3+ encoder, {len(segments)} segments, {torch.get_num_threads()} threads, fastest of {repeat}: "
          f"plain {best['plain']:.2f} s (pre-encoder {best['plain pre-encoder']:.2f}, Perceiver {best['plain perceiver']:.2f})"
          f" → now {best['now']:.2f} s (pre-encoder {best['now pre-encoder']:.2f}, Perceiver {best['now perceiver']:.2f}):"
          f" {best['plain'] / best['now']:.2f}x; outputs identical: {same}")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="audio length (default 4 s = 2 segments)")
    ap.add_argument("--tokens", type=int, default=12,
                    help="tokens per channel for both paths (naive cost grows with its square)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--encoder-ab", action="store_true", help="encoder now vs its plain form (see above)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, t_make = timed(lambda: random_checkpoint(args.manifest, Path(tmp)))
        (model, _), t_load = timed(lambda: load_model(ckpt))
    model = model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t))
             + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    segments = torch.from_numpy(segment_audio(audio)).to(device)
    n_seg, n_tok = len(segments), args.tokens
    emb, dec, head = model.embed_tokens, model.decoder, model.lm_head

    if args.encoder_ab:
        with torch.inference_mode():
            encoder_ab(model, segments, args.repeat)
        return

    with torch.inference_mode():
        # warm-up (allocator, kernels)
        model.generate(model.encode(model.spectrogram(segments[:1])), 2, stop_at_eos=False)

        # ours
        memory, t_enc = timed(lambda: model.encode(model.spectrogram(segments)))
        ours, t_dec = timed(lambda: model.generate(memory, n_tok, stop_at_eos=False))

        # naive: per segment, per channel, uncached
        t_enc_naive = t_dec_naive = 0.0
        naive = []
        for s in range(n_seg):
            mem_s, dt = timed(lambda: model.encode(model.spectrogram(segments[s:s + 1])))
            t_enc_naive += dt
            seg_tokens = []
            for c in range(memory.shape[1]):
                ids, dt = timed(lambda: naive_decode(emb, dec, head, mem_s[:, c], n_tok, stop_at_eos=False))
                t_dec_naive += dt
                seg_tokens.append(ids)
            naive.append(seg_tokens)

    total_tokens = sum(len(ch) for seg in ours for ch in seg)
    assert total_tokens == sum(len(ch) for seg in naive for ch in seg) == n_seg * 13 * n_tok
    same = sum(a == b for sa, sb in zip(ours, naive) for a, b in zip(sa, sb))
    rows = {
        "device": str(device), "threads": args.threads, "parameters": n_params,
        "audio_s": args.seconds, "segments": n_seg, "tokens_per_channel": n_tok,
        "decoded_tokens": total_tokens, "channels_identical": f"{same}/{n_seg * 13}",
        "checkpoint_write_s": round(t_make, 2), "checkpoint_load_s": round(t_load, 2),
        "ours_encoder_s": round(t_enc, 3), "ours_decode_s": round(t_dec, 3),
        "naive_encoder_s": round(t_enc_naive, 3), "naive_decode_s": round(t_dec_naive, 3),
        "decode_speedup": round(t_dec_naive / t_dec, 2),
        "end_to_end_speedup": round((t_enc_naive + t_dec_naive) / (t_enc + t_dec), 2),
        "ours_tokens_per_s": round(total_tokens / t_dec, 1),
        "naive_tokens_per_s": round(total_tokens / t_dec_naive, 1),
    }
    print(json.dumps(rows, indent=1))
    print(f"\nYourMT3+ {args.device}, {args.threads} threads, {n_seg} segments × 13 channels × {n_tok} tokens: "
          f"decoding {t_dec_naive:.2f} s naive → {t_dec:.2f} s ours ({rows['decode_speedup']}×); "
          f"end to end {t_enc_naive + t_dec_naive:.2f} s → {t_enc + t_dec:.2f} s ({rows['end_to_end_speedup']}×)")


if __name__ == "__main__":
    main()
