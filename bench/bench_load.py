"""Peak memory of loading each token model, and of one short run after it.

    python bench/bench_load.py [--models mt3,mr_mt3,yourmt3] [--seconds 4] [--tokens 16]

Full-size seeded random checkpoints from the manifests, written like the published files: MT3 a
plain state dict, MR-MT3 and YourMT3 Lightning files that also carry AdamW's two moments per weight
(the published .ckpt files do; they are memory-mapped, so only the weights should be paged in).
Each model loads in a fresh process, through the registry as the app does, after everything is
imported. The peak-RSS mark (VmHWM) is reset to the current RSS right before the load
(``/proc/self/clear_refs``), so ``load_peak_mb`` is what loading adds at its worst, and
``kept_mb`` what stays (anonymous + file-backed pages). ``run_peak_mb`` is the peak of the load and
one transcription of ``--seconds`` at a fixed ``--tokens`` per segment (EOS off), over the RSS
before the load. ``storage_mb`` sums the storages the model's tensors hold: more than the tensors
themselves would mean a weight pins a bigger block (a view into the file or a fused tensor).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, fixed_decoding, table, test_signal, write_model_checkpoint  # noqa: E402


def status_mb() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) / 1024
    return out


def tensor_and_storage_mb(module) -> tuple[float, float]:
    tensors = list(module.parameters()) + list(module.buffers())
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return (sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values()) / 2**20,
            sum(storages.values()) / 2**20)


def child(model: str, folder: str, seconds: float, tokens: int) -> None:
    import torch

    from mt3_demo.audio import Clip
    from mt3_demo.registry import load_registry

    decode = fixed_decoding(tokens)[model]
    spec = load_registry()[0][model]
    options = spec.options_type()
    clip = Clip.from_array(test_signal(seconds, seed=1))
    location = spec.resolve(Path(folder) / "last.ckpt" if model == "yourmt3" else Path(folder), options)
    before = status_mb()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS now
    transcriber = spec.build(location, torch.device("cpu"), options)
    loaded = status_mb()
    tensors_mb, storage_mb = tensor_and_storage_mb(transcriber.model)
    with torch.inference_mode():
        transcriber.transcribe(clip, decode)
    after = status_mb()
    print(json.dumps({
        "model": model, "rss_before_mb": round(before["VmRSS"], 1),
        "load_peak_mb": round(loaded["VmHWM"] - before["VmRSS"], 1),
        "kept_mb": round(loaded["VmRSS"] - before["VmRSS"], 1),
        "kept_anon_mb": round(loaded["RssAnon"] - before["RssAnon"], 1),
        "kept_file_mb": round(loaded["RssFile"] - before["RssFile"], 1),
        "tensors_mb": round(tensors_mb, 1), "storage_mb": round(storage_mb, 1),
        "run_peak_mb": round(after["VmHWM"] - before["VmRSS"], 1)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mt3,mr_mt3,yourmt3")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--tokens", type=int, default=16, help="tokens decoded per segment (per channel for yourmt3)")
    p.add_argument("--repeat", type=int, default=1, help="fresh processes per model")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        model, folder, seconds, tokens = args.child
        child(model, folder, float(seconds), int(tokens))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            folder = Path(tmp) / model
            write_model_checkpoint(model, folder, adamw=True)
            size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
            for _ in range(args.repeat):
                proc = subprocess.run([sys.executable, __file__, "--child", model, str(folder), str(args.seconds),
                                       str(args.tokens)], capture_output=True, text=True, cwd=ROOT, env=os.environ)
                if proc.returncode:
                    raise SystemExit(f"{model} failed:\n{proc.stderr[-2000:]}")
                row = {**json.loads(proc.stdout.strip().splitlines()[-1]), "file_mb": round(size, 1)}
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
    print(table(rows, ["model", "file_mb", "tensors_mb", "storage_mb", "load_peak_mb", "kept_mb", "kept_anon_mb",
                       "kept_file_mb", "run_peak_mb"]))


if __name__ == "__main__":
    main()
