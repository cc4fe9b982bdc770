"""What the benchmarks run on: full-size random checkpoints from the state-dict manifests, music-like
test signals, and the token models held at a fixed decode length. (Timing, memory, child processes
and result files: ``harness.py``.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from harness import ROOT

MT3_MANIFEST = ROOT / "tests" / "fixtures" / "mt3" / "mt3_pth_manifest.json"
MR_MT3_MANIFEST = ROOT / "tests" / "fixtures" / "mr_mt3" / "mrmt3_ckpt_manifest.json"
YOURMT3_MANIFEST = ROOT / "tests" / "fixtures" / "yourmt3" / "ymt3_ckpt_manifest.json"


def random_state_dict_from_manifest(manifest: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with every key/shape of a manifest, T5-like random values, aliases shared.

    Norm weights 1 + 0.1·N(0,1); embeddings N(0,1); other matrices N(0,1)/sqrt(fan_in);
    ``inv_freq`` buffers kunato's formula. Deterministic for a seed.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for entry in manifest["keys"]:
        key, shape = entry["key"], tuple(entry["shape"])
        if entry.get("alias_of"):
            continue
        if key.endswith("inv_freq"):
            d = 2 * shape[0]
            t = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        elif len(shape) == 1:
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif "embed_tokens" in key and "decoder" in key:
            t = torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / shape[1] ** 0.5
        out[key] = t
    for entry in manifest["keys"]:
        if entry.get("alias_of"):
            out[entry["key"]] = out[entry["alias_of"]]  # same tensor object: stored once, like the real file
    return {e["key"]: out[e["key"]] for e in manifest["keys"]}  # manifest order


TOKEN_MODELS = ("mt3", "mr_mt3", "yourmt3")  # the models benchmarked on full-size random checkpoints


def write_model_checkpoint(model: str, folder: Path, adamw: bool = False) -> None:
    """A full-size seeded random checkpoint of a token model in its published layout, in ``folder``
    (as ``$MT3_DEMO_CHECKPOINTS/<model>`` holds it). ``adamw``: the Lightning files (MR-MT3,
    YourMT3+) also carry AdamW's two moments per weight, as the published ones do."""
    folder.mkdir(parents=True, exist_ok=True)
    if model == "mt3":
        write_checkpoint(folder, json.loads(MT3_MANIFEST.read_text()), "mt3.pth")
    elif model == "mr_mt3":
        write_mr_mt3_checkpoint(folder, adamw=adamw)
    elif model == "yourmt3":
        path = write_yourmt3_checkpoint(folder)
        if adamw:
            with_adamw_moments(path)
    else:
        raise SystemExit(f"no random checkpoint for {model} (token models: {', '.join(TOKEN_MODELS)})")


def adamw_moments(weights: list[torch.Tensor]) -> list[dict]:
    """Lightning's ``optimizer_states`` for AdamW with both moments of every weight, as the published
    .ckpt files carry them (two more copies of the weights on disk)."""
    return [{"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(t), "exp_avg_sq": torch.rand_like(t)}
                       for i, t in enumerate(weights)},
             "param_groups": [{"lr": 1e-5, "params": list(range(len(weights)))}]}]


def write_mr_mt3_checkpoint(folder: Path, seed: int = 0, adamw: bool = False) -> Path:
    """MR-MT3's Lightning layout under the default file name: every manifest key under ``model.``, the
    three alias pairs sharing one tensor; ``adamw``: with AdamW's moments, like the published files
    (≈ 3 × 194 MB on disk)."""
    from mt3_demo.models.mr_mt3.checkpoint import DEFAULT_CHECKPOINT

    manifest = json.loads(MR_MT3_MANIFEST.read_text())
    sd = random_state_dict_from_manifest(manifest, seed)
    for canonical, alias in manifest["aliases_same_tensor"]:
        sd[alias] = sd[canonical]
    unique = list({id(t): t for k, t in sd.items() if not k.endswith("inv_freq")}.values())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DEFAULT_CHECKPOINT
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.1.3", "state_dict": sd,
                "loops": {}, "callbacks": {}, "optimizer_states": adamw_moments(unique) if adamw else [],
                "lr_schedulers": []}, path)
    return path


def write_yourmt3_checkpoint(folder: Path, seed: int = 0) -> Path:
    """YourMT3+'s ``last.ckpt`` with the manifest's keys and shapes, random weights and upstream's
    constants where they matter (STFT window, RoPE frequencies, position table, BatchNorm variances)."""
    g = torch.Generator().manual_seed(seed)
    keys = json.loads(YOURMT3_MANIFEST.read_text())["keys"]
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
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "last.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": {}}, path)
    return path


def with_adamw_moments(path: Path) -> None:
    """Rewrite a Lightning file with AdamW's exp_avg / exp_avg_sq for every floating weight."""
    ckpt = torch.load(path, weights_only=True)
    ckpt["optimizer_states"] = adamw_moments([t for t in ckpt["state_dict"].values() if t.is_floating_point()])
    torch.save(ckpt, path)


def write_checkpoint(folder: Path, manifest: dict, weights_name: str, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict_from_manifest(manifest, seed), folder / weights_name)
    if "config_json" in manifest:
        (folder / "config.json").write_text(json.dumps(manifest["config_json"], indent=1))
    return folder


def test_signal(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Music-like float32 signal: a decaying harmonic tone every 0.5 s over a noise floor.

    Built tone by tone over 4 s windows, so a 10-minute signal costs little more than its own 38 MB.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = (1e-3 * rng.standard_normal(n)).astype(np.float32)
    tail = np.arange(4 * rate, dtype=np.float32) / rate
    env = np.exp(-3 * tail) * 0.1
    for onset in np.arange(0, seconds, 0.5):
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        start = int(onset * rate)
        m = min(len(tail), n - start)
        tone = sum(np.sin(2 * np.pi * f0 * h * tail[:m]) / h for h in range(1, 5)) * env[:m]
        x[start:start + m] += tone.astype(np.float32)
    return x


def fixed_decoding(tokens: int) -> dict:
    """Every token model's decode options holding it at ``tokens`` per segment (EOS off): fixed
    work per run. Decode options, so nothing in the package is patched and nothing reloads."""
    from mt3_demo.options import MRMT3Decode, MT3Decode, YourMT3Decode

    return {"mt3": MT3Decode(max_tokens=tokens, stop_at_eos=False),
            "mr_mt3": MRMT3Decode(max_tokens=tokens, stop_at_eos=False),
            "yourmt3": YourMT3Decode(max_tokens=tokens, stop_at_eos=False)}
