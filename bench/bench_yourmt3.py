"""YourMT3+ speed: our batched, KV-cached decoding vs the naive per-segment, per-channel, uncached one.

A full-size checkpoint is made from the state-dict manifest (655 keys, 47.1 M parameters) with random
weights and written in the Lightning layout, so the real loader runs too. Both paths decode exactly
``--tokens`` ids per channel (EOS ignored: random weights end channels arbitrarily), so they do equal
work in tokens; both run the identical encoder. Ratios are taken within this one run.

    python bench/bench_yourmt3.py [--seconds 4] [--tokens 12] [--threads 2] [--device cpu]
    python bench/bench_yourmt3.py --encoder-ab [--seconds 6] [--threads 1] [--repeat 3] [--profile]

``--encoder-ab`` instead times the encoder as it is ("now": BatchNorms folded into channels-last
convolutions) against two earlier forms in the same run, interleaved ``--repeat`` times: "before" (the
grouped MoE, NCHW convolutions with separate BatchNorm passes: the encoder before the convolution work)
and "plain" (also the per-expert ``nonzero`` loop with ``index_add_``, out-of-place ReLU/add and
``avg_pool2d``). Now vs before is checked against the float32 rounding bound (tests/numerics.py).

Naive baseline: for each segment, spectrogram + encoder on that segment alone, then for each of the 13
channels a greedy loop that re-runs the decoder over the whole prefix (and recomputes the
cross-attention keys/values of its memory) at every step.
Ours: all segments' spectrograms/encoder in one batch, then all segments × 13 channels as one decoder
batch, one new position per step, self-attention keys/values cached, cross-attention ones computed once.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_yourmt3_checkpoint  # noqa: E402
from harness import best_of, table, write_result  # noqa: E402  (also puts the repository on sys.path)
from naive import moe_loop, naive_decode  # noqa: E402

from mt3_demo.models.yourmt3 import encoder as enc_mod  # noqa: E402
from mt3_demo.models.yourmt3.features import SAMPLE_RATE, segment_audio  # noqa: E402
from mt3_demo.models.yourmt3.model import load_model  # noqa: E402
from tests.numerics import network_tolerance  # noqa: E402


def plain_resblock(self, x):
    """The pre-encoder block out of place, pooled with avg_pool2d (the code before the convolution work)."""
    h = F.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    h = F.relu(h + (self.shortcut(x) if self.shortcut is not None else x))
    return F.avg_pool2d(h, (1, 2))


def nchw_resblock(self, x):
    """The pre-encoder block before BatchNorm folding and channels-last: NCHW convolutions, each
    BatchNorm its own pass; ReLU/add in place and the pairwise-mean pooling (the encoder of 2026-11-26)."""
    h = self.bn1(self.conv1(x)).relu_()
    h = self.bn2(self.conv2(h))
    h += self.shortcut(x) if self.shortcut is not None else x
    return enc_mod.mean_of_bin_pairs(h.relu_())


VARIANTS = {  # name → (MoE.forward, ResBlock.forward)
    "plain": (moe_loop, plain_resblock),
    "before": (enc_mod.MoE.forward, nchw_resblock),
    "now": (enc_mod.MoE.forward, enc_mod.ResBlock.forward),
}


def encoder_ab(model, segments, repeat: int) -> None:
    """Encoder now vs its earlier forms, interleaved, fastest of ``repeat`` each; outputs compared."""
    spec = model.spectrogram(segments)
    current = VARIANTS["now"]
    best, outs = {}, {}
    for _ in range(repeat):
        for name, (moe, res) in VARIANTS.items():
            enc_mod.MoE.forward, enc_mod.ResBlock.forward = moe, res
            try:
                t_pre, pre = best_of(lambda: model.pre_encoder(spec), 1)
                t_enc, out = best_of(lambda: model.encoder(pre), 1)
            finally:
                enc_mod.MoE.forward, enc_mod.ResBlock.forward = current
            if t_pre + t_enc < best.get(name, float("inf")):
                best[name], best[name + " pre-encoder"], best[name + " perceiver"] = t_pre + t_enc, t_pre, t_enc
            outs[name] = pre, out
    (pre_b, out_b), (pre_n, out_n) = outs["before"], outs["now"]
    e = model.dims.encoder
    # float32 bounds of two evaluations (tests/numerics.py): 6 convs of fan-in 9·C on the pre-encoder's
    # longest path; 6 products per Perceiver layer after it (as in tests/test_yourmt3_model.py)
    tol_pre = network_tolerance(pre_b, 6, 9 * e.conv_channels)
    layers = e.num_blocks * (1 + e.num_local + e.num_temporal)
    tol_out = tol_pre + network_tolerance(out_b, 6 * layers, max(e.d_latent, e.d_expert, e.kv_dim))
    d_pre, d_out = float((pre_n - pre_b).abs().max()), float((out_n - out_b).abs().max())
    print(f"\nYourMT3+ encoder, {len(segments)} segments, {torch.get_num_threads()} threads, fastest of {repeat}:")
    for name in VARIANTS:
        print(f"  {name:6s} {best[name]:.2f} s (pre-encoder {best[name + ' pre-encoder']:.2f}, "
              f"Perceiver {best[name + ' perceiver']:.2f})  now is {best[name] / best['now']:.2f}x faster")
    same_pre = torch.equal(outs["plain"][0], outs["before"][0])  # the MoE comparison needs equal inputs
    moe_same = torch.equal(outs["plain"][1], outs["before"][1]) if same_pre else "n/a"
    print(f"  now vs before: max |Δ| pre-encoder {d_pre:.2e} (float32 bound {tol_pre:.2e}), "
          f"encoder output {d_out:.2e} (bound {tol_out:.2e}); MoE plain vs grouped outputs identical: {moe_same}")
    if d_pre > tol_pre or d_out > tol_out:
        raise SystemExit("encoder outputs differ by more than float32 rounding")
    rows = [{"encoder": name, "total s": best[name], "pre-encoder s": best[name + " pre-encoder"],
             "Perceiver s": best[name + " perceiver"]} for name in VARIANTS]
    write_result("bench_yourmt3_encoder", rows, {
        "before ÷ now": best["before"] / best["now"], "plain ÷ now": best["plain"] / best["now"],
        "now vs before, max |Δ| encoder output ÷ float32 bound": d_out / tol_out})


def op_class(name: str) -> str:
    """An operator's class, from its profiler key (``aten::addmm``) or flop-counter name (``aten.addmm.default``)."""
    op = name.replace("::", ".").split(".")[1] if "aten" in name else name
    if "convolution" in op:
        return "convolution"
    if "scaled_dot_product" in op:
        return "attention"
    if op in ("mm", "addmm", "addmm_", "bmm", "baddbmm"):
        return "matrix products"
    return "elementwise, norms, copies, other"


def gemm_gflops(n: int = 2048, repeat: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = best_of(lambda: a @ b, repeat)[0]
    return 2 * n ** 3 / best / 1e9


def encoder_profile(model, spec, repeat: int) -> None:
    """Where the encoder's time goes now: profiler self time per operator class (the least of
    ``repeat`` profiled calls, class by class: a shared machine only adds time), and the GFLOP/s of its
    convolutions and matrix products against a 2048² GEMM (the best, measured before and after each call)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    model.requires_grad_(False)  # FlopCounterMode's module hooks trip over parameters that require grad
    with FlopCounterMode(display=False) as counter:
        model.encoder(model.pre_encoder(spec))
    flops = {}
    for op, n in counter.get_flop_counts()["Global"].items():
        flops[op_class(str(op))] = flops.get(op_class(str(op)), 0) + n
    sgemm = gemm_gflops()
    best = {}
    for _ in range(repeat):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.encoder(model.pre_encoder(spec))
        seconds = {}
        for e in prof.key_averages():
            seconds[op_class(e.key)] = seconds.get(op_class(e.key), 0.0) + e.self_cpu_time_total / 1e6
        best = {c: min(best.get(c, float("inf")), t) for c, t in seconds.items()}
        sgemm = max(sgemm, gemm_gflops())  # the machine does at least its best measurement
    seconds = best
    total = sum(seconds.values())
    print(f"\nProfile of the encoder now (profiler self time {total:.2f} s, least of {repeat} per class; "
          f"2048² GEMM {sgemm:.0f} GFLOP/s in this run):")
    for cls, sec in sorted(seconds.items(), key=lambda kv: -kv[1]):
        work = flops.get(cls, 0)
        rate = (f", {work / 1e9:.0f} GFLOP at {work / sec / 1e9:.0f} GFLOP/s = "
                f"{work / sec / 1e9 / sgemm:.0%} of the GEMM") if work else ""
        print(f"  {cls:35s} {sec:6.2f} s {sec / total:4.0%}{rate}")
    floor = sum(flops.values()) / (sgemm * 1e9)
    print(f"  all counted FLOPs ({sum(flops.values()) / 1e9:.0f} G) at the GEMM rate: {floor:.2f} s "
          f"= {floor / total:.0%} of the profiled time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="audio length (default 4 s = 2 segments)")
    ap.add_argument("--tokens", type=int, default=12,
                    help="tokens per channel for both paths (naive cost grows with its square)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--encoder-ab", action="store_true", help="encoder now vs its plain form (see above)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="with --encoder-ab: where the encoder's time goes now")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        t_make, ckpt = best_of(lambda: write_yourmt3_checkpoint(Path(tmp)), 1)
        t_load, (model, _) = best_of(lambda: load_model(ckpt), 1)
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
            if args.profile:
                encoder_profile(model, model.spectrogram(segments), args.repeat)
        return

    with torch.inference_mode():
        # warm-up (allocator, kernels)
        model.generate(model.encode(model.spectrogram(segments[:1])), 2, stop_at_eos=False)

        # ours
        t_enc, memory = best_of(lambda: model.encode(model.spectrogram(segments)), 1)
        t_dec, ours = best_of(lambda: model.generate(memory, n_tok, stop_at_eos=False), 1)

        # naive: per segment, per channel, uncached
        t_enc_naive = t_dec_naive = 0.0
        naive = []
        for s in range(n_seg):
            dt, mem_s = best_of(lambda: model.encode(model.spectrogram(segments[s:s + 1])), 1)
            t_enc_naive += dt
            seg_tokens = []
            for c in range(memory.shape[1]):
                dt, ids = best_of(lambda: naive_decode(emb, dec, head, mem_s[:, c], n_tok, stop_at_eos=False), 1)
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
    print(table([rows], list(rows)))
    write_result("bench_yourmt3", [
        {"path": "ours: batched, KV cache", "encoder s": t_enc, "decode s": t_dec, "tokens/s": total_tokens / t_dec},
        {"path": "naive: per segment and channel, no cache", "encoder s": t_enc_naive, "decode s": t_dec_naive,
         "tokens/s": total_tokens / t_dec_naive}],
        {"decode, naive ÷ ours": rows["decode_speedup"], "end to end, naive ÷ ours": rows["end_to_end_speedup"],
         "channels with identical ids": rows["channels_identical"]})
    print(f"\nYourMT3+ {args.device}, {args.threads} threads, {n_seg} segments × 13 channels × {n_tok} tokens: "
          f"decoding {t_dec_naive:.2f} s naive → {t_dec:.2f} s ours ({rows['decode_speedup']}×); "
          f"end to end {t_enc_naive + t_dec_naive:.2f} s → {t_enc + t_dec:.2f} s ({rows['end_to_end_speedup']}×)")


if __name__ == "__main__":
    main()
