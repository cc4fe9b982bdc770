"""The app server's memory for one long upload, per model (the target: ≤ 2 GB on the CPU).

    python bench/server_memory.py                          # every model, a 10-minute upload
    python bench/server_memory.py --models mt3 --seconds 60
    python bench/server_memory.py --models transkun --seconds 20 --references none,bound,million \
        --result server_memory_hostile_reference   # with hostile reference MIDI (issue 21)

For each model a fresh server (the real Blocks app, launched in a child process on loopback with
its own GRADIO_TEMP_DIR) receives one upload through the API (``/transcribe``, as a visitor's
browser or ``gradio_client`` sends it): a 44.1 kHz stereo 16-bit WAV of a music-like signal — the
file a phone or a DAW export gives. The server's RSS (with its children) is sampled every 50 ms
from before the upload to the end of the run, so the peak covers everything a request does: the
upload, decoding and resampling the file, the model, and the writers (MIDI, piano roll, the
synthesized audio for listening, stems, the player's payload).

transkun runs its real weights. mt3, mr_mt3 and yourmt3 run full-size seeded random checkpoints
(the manifests' shapes) with decoding held at ``--tokens`` per segment (EOS off), as in
``bench_memory.py``: their memory depends on the shapes and the number of tokens, not on what the
weights say.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOKEN_MODELS, fixed_decoding, test_signal, write_model_checkpoint  # noqa: E402
from harness import ROOT, PeakSampler, free_port, stop_server, table, wait_until_up, write_result  # noqa: E402

MODELS = ("transkun", "mt3", "mr_mt3", "yourmt3")


def serve(tokens: int) -> None:
    """Child process: the app as ``app.py`` builds it, with the token models' work held fixed."""
    from mt3_demo import allocator
    from mt3_demo.manager import manager_for
    from mt3_demo.options import settings_from_env
    from mt3_demo.ui import build_demo, launch_kwargs

    allocator.one_arena()  # as app.py does, before Gradio's threads start
    settings = settings_from_env()
    manager = manager_for(settings)
    manager.decode.update(fixed_decoding(tokens))  # every request's default decode options
    build_demo(manager, settings).launch(server_name="127.0.0.1", server_port=int(os.environ["GRADIO_SERVER_PORT"]),
                                         quiet=True, **launch_kwargs())


def write_upload(path: Path, seconds: float) -> None:
    """A 44.1 kHz stereo 16-bit WAV, written in pieces (the bench itself stays small)."""
    import numpy as np
    import soundfile as sf

    rate = 44100
    mono = test_signal(seconds, rate=rate, seed=1)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=2, subtype="PCM_16") as f:
        for start in range(0, len(mono), 60 * rate):
            piece = mono[start:start + 60 * rate]
            f.write(np.stack([piece, 0.8 * piece], axis=1))


def measure(model: str, upload: Path, work: Path, tokens: int, timeout: float,
            reference: Path | None = None) -> dict:
    """One fresh server, one upload; its RSS before and at peak, and what came back."""
    from gradio_client import Client, handle_file

    gradio_tmp = Path(tempfile.mkdtemp(prefix=f"gradio-{model}-", dir=work))
    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(gradio_tmp), GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", MT3_DEMO_CHECKPOINTS=str(work / "ck"))
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(tokens)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, server, 300)
        rss = PeakSampler(server.pid, children=True, interval_s=0.05).start()
        time.sleep(0.5)
        idle = rss.peak_mb
        client = Client(url, verbose=False)
        start = time.monotonic()
        try:
            out = client.predict(handle_file(str(upload)), [model], handle_file(str(reference)) if reference else None,
                                 api_name="/transcribe")
            entry = out[2]["models"][model]
            detail = f"{entry['stats']['total']} notes" if "stats" in entry else entry.get("error", "?")[:60]
        except Exception as e:  # noqa: BLE001 - reported in the table
            detail = "error: " + str(e).strip().splitlines()[-1][:80]
        wall = time.monotonic() - start
        client.close()
        rss.stop()
    finally:
        stop_server(server)
    return {"model": model, "seconds": None, "reference": reference.stem if reference else "none",
            "idle_mb": round(idle), "peak_mb": round(rss.peak_mb),
            "wall_s": round(wall, 1), "result": detail}


def _label(row: dict) -> str:
    return row["model"] if row["reference"] == "none" else f"{row['model']} + {row['reference']}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seconds", type=float, default=600.0, help="length of the upload")
    ap.add_argument("--tokens", type=int, default=32, help="token models: tokens decoded per segment")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--references", default="none",
                    help="comma-separated: none, bound (a reference of 20 000 notes over the upload, the "
                         "most the app accepts), million (1 000 000 notes, refused); each model runs with each")
    ap.add_argument("--result", default="server_memory",
                    help="name of the result file in bench/results/ (default server_memory)")
    ap.add_argument("--serve", type=int, metavar="TOKENS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mt3-server-memory-") as tmp:
        work = Path(tmp)
        for model in models:
            if model in TOKEN_MODELS:
                write_model_checkpoint(model, work / "ck" / model)
        upload = work / f"upload_{args.seconds:.0f}s.wav"
        write_upload(upload, args.seconds)
        print(f"upload: {upload.stat().st_size / 1e6:.1f} MB, {args.seconds:.0f} s", file=sys.stderr)
        from hostile import dense_reference

        references = {}
        for kind in [k.strip() for k in args.references.split(",") if k.strip()]:
            notes = {"none": 0, "bound": 20_000, "million": 1_000_000}[kind]
            references[kind] = work / f"{kind}_reference.mid" if notes else None
            if notes:
                references[kind].write_bytes(dense_reference(notes, args.seconds))
        for model in models:
            for reference in references.values():
                row = measure(model, upload, work, args.tokens, args.timeout, reference)
                row["seconds"] = args.seconds
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
    print(table(rows, ["model", "seconds", "reference", "idle_mb", "peak_mb", "wall_s", "result"]))
    print("idle: the server before the upload (no model loaded); peak: the whole request, with its children.")
    write_result(args.result, rows, {f"{_label(r)}: peak ÷ the 2 GB target (2048 MiB)": r["peak_mb"] / 2048
                                         for r in rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
