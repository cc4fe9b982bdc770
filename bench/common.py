"""Helpers shared by the benchmarks: random checkpoints from manifests, test signals, timing, RSS."""
from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
        manifest = json.loads((ROOT / "tests" / "fixtures" / "mt3" / "mt3_pth_manifest.json").read_text())
        write_checkpoint(folder, manifest, "mt3.pth")
    elif model == "mr_mt3":
        from bench_mr_mt3 import write_random_ckpt

        write_random_ckpt(folder, adamw=adamw)
    elif model == "yourmt3":
        from bench_yourmt3 import MANIFEST, random_checkpoint

        path = random_checkpoint(MANIFEST, folder)
        if adamw:
            with_adamw_moments(path)
    else:
        raise SystemExit(f"no random checkpoint for {model} (token models: {', '.join(TOKEN_MODELS)})")


def with_adamw_moments(path: Path) -> None:
    """Rewrite a Lightning file with AdamW's exp_avg / exp_avg_sq for every floating weight."""
    ckpt = torch.load(path, weights_only=True)
    weights = [t for t in ckpt["state_dict"].values() if t.is_floating_point()]
    ckpt["optimizer_states"] = [{"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(t),
                                               "exp_avg_sq": torch.rand_like(t)} for i, t in enumerate(weights)},
                                 "param_groups": [{"lr": 1e-5, "params": list(range(len(weights)))}]}]
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


@contextmanager
def timer(out: dict, key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: VmHWM from /proc/self/status, which starts afresh at exec. (getrusage's ru_maxrss does
    not: a subprocess would inherit its parent's peak.) Elsewhere: getrusage.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain Markdown table."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def fixed_decoding(tokens: int) -> dict:
    """Every token model's decode options holding it at ``tokens`` per segment (EOS off): fixed
    work per run. Decode options, so nothing in the package is patched and nothing reloads."""
    from mt3_demo.options import MRMT3Decode, MT3Decode, YourMT3Decode

    return {"mt3": MT3Decode(max_tokens=tokens, stop_at_eos=False),
            "mr_mt3": MRMT3Decode(max_tokens=tokens, stop_at_eos=False),
            "yourmt3": YourMT3Decode(max_tokens=tokens, stop_at_eos=False)}
