"""A burst on the app's API, on loopback: good uploads queue behind each other, bad ones must not.

Starts ``app.py`` in a child process (its own GRADIO_TEMP_DIR, a free 127.0.0.1 port), then at once
sends ``--clients`` good requests (a short piano clip, transkun) from as many threads, and — while
those fill the queue — ``len(BAD_UPLOADS)`` bad uploads. Checks: every good request succeeds, every
bad one gets its message (from the validator, before the queue) in under ``--bad-limit`` seconds.
Hostile reference MIDI files (a million notes; one over the note bound) go with good recordings and
must be refused the same way; ``--bound-reference`` adds a good request scored against a reference
at the note bound. Every refused upload must be gone from Gradio's folder afterwards.
Prints each request's time, the server's peak RSS and how much its temp dir grew.

    python bench/burst.py                 # 16 clients + 6 bad uploads
    python bench/burst.py --clients 4     # a quicker look

Bounded: ``--timeout`` seconds for the whole burst (the server is stopped either way).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, PeakSampler, free_port, stop_server, wait_until_up, write_result  # noqa: E402

from mt3_demo.reference import MAX_NOTES  # noqa: E402 - the app's bound on a reference's notes

PIANO = ROOT / "examples_audio" / "piano_cschumann_polonaise.wav"

# name -> bytes: what people (or scripts) upload by mistake
BAD_UPLOADS = {
    "empty.wav": b"",
    "text.wav": b"this is plain text, not a recording\n" * 20,
    "truncated.wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    "random.mp3": os.urandom(4096),
    "zeros.flac": bytes(2048),
    "html.ogg": b"<html><body>not audio</body></html>",
}
# name -> notes: hostile references sent with a good recording (issue 21). Over the app's bounds they
# must be refused like a bad upload; one at the note bound (``--bound-reference``) is a good request.
HOSTILE_REFERENCES = {"million_notes.mid": 1_000_000, "over_the_note_bound.mid": MAX_NOTES + 1}


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--clip-seconds", type=float, default=3.0)
    ap.add_argument("--bad-limit", type=float, default=5.0, help="seconds a bad upload may take")
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds for the whole burst")
    ap.add_argument("--bound-reference", action="store_true",
                    help=f"one more good request, scored against a reference of {MAX_NOTES:,} notes (the bound)")
    args = ap.parse_args()

    import soundfile as sf
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="mt3-burst-"))
    gradio_tmp = work / "gradio"
    gradio_tmp.mkdir()
    audio, rate = sf.read(str(PIANO), dtype="float32")
    clip = work / "piano_clip.wav"
    sf.write(str(clip), audio[: int(args.clip_seconds * rate)], rate)
    bad_files = []
    for name, data in BAD_UPLOADS.items():
        (work / name).write_bytes(data)
        bad_files.append(work / name)
    from hostile import dense_reference

    hostile = []
    for name, notes in HOSTILE_REFERENCES.items():
        (work / name).write_bytes(dense_reference(notes, args.clip_seconds))
        hostile.append(work / name)
    bound = work / "at_the_note_bound.mid"
    bound.write_bytes(dense_reference(MAX_NOTES, args.clip_seconds))

    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(gradio_tmp), GRADIO_SERVER_PORT=str(port),
               GRADIO_SERVER_NAME="127.0.0.1", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"),
               GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, server, 180)
        rss = PeakSampler(server.pid, children=True, interval_s=0.2).start()
        disk_before = folder_mb(gradio_tmp)
        results: dict[str, tuple[str, float, str]] = {}

        def call(tag: str, path: Path, reference: Path | None = None) -> None:
            client = Client(url, verbose=False)
            start = time.monotonic()
            try:
                out = client.predict(handle_file(str(path)), ["transkun"],
                                     handle_file(str(reference)) if reference else None, api_name="/transcribe")
                notes = out[2]["models"]["transkun"]["stats"]["total"]
                results[tag] = ("ok", time.monotonic() - start, f"{notes} notes")
            except Exception as e:  # noqa: BLE001 - recorded: a bad upload must fail, with its message
                results[tag] = ("error", time.monotonic() - start, str(e).strip().splitlines()[-1][:120])
            finally:
                client.close()

        start = time.monotonic()
        with ThreadPoolExecutor(args.clients + len(bad_files) + len(hostile) + 1) as pool:
            futures = [pool.submit(call, f"good-{i:02d}", clip) for i in range(args.clients)]
            time.sleep(3.0)  # the good ones have joined the queue; now the bad ones arrive
            futures += [pool.submit(call, f"bad-{p.name}", p) for p in bad_files]
            futures += [pool.submit(call, f"bad-{p.name}", clip, p) for p in hostile]
            if args.bound_reference:
                futures.append(pool.submit(call, "good-bound-reference", clip, bound))
            for f in futures:
                f.result(timeout=max(1.0, args.timeout - (time.monotonic() - start)))
        wall = time.monotonic() - start
        rss.stop()
        disk_after = folder_mb(gradio_tmp)
        refused = {p.name for p in bad_files + hostile}
        left = sorted(f.name for f in gradio_tmp.rglob("*") if f.is_file() and f.name in refused)
    finally:
        stop_server(server)

    for tag in sorted(results):
        status, seconds, detail = results[tag]
        print(f"{tag:22s} {status:6s} {seconds:7.1f} s  {detail}")
    good = [r for t, r in results.items() if t.startswith("good")]
    bad = [r for t, r in results.items() if t.startswith("bad")]
    good_ok = sum(r[0] == "ok" for r in good)
    bad_fast = sum(r[0] == "error" and r[1] < args.bad_limit for r in bad)
    print(f"\ngood requests: {good_ok}/{len(good)} succeeded; bad uploads answered with an error in "
          f"< {args.bad_limit:g} s: {bad_fast}/{len(bad)} (slowest {max((r[1] for r in bad), default=0):.2f} s)")
    print(f"burst wall time {wall:.0f} s; server peak RSS {rss.peak_mb:.0f} MB; "
          f"temp dir grew {disk_after - disk_before:.1f} MB ({disk_after:.1f} MB in all)")
    print(f"refused uploads left in Gradio's folder: {len(left)} of {len(refused)} {left if left else ''}")
    write_result("burst", [{"request": tag, "status": status, "seconds": seconds, "detail": detail}
                           for tag, (status, seconds, detail) in sorted(results.items())],
                 {"good requests that succeeded": f"{good_ok}/{len(good)}",
                  f"bad uploads answered in < {args.bad_limit:g} s": f"{bad_fast}/{len(bad)}",
                  "slowest bad upload, s": max((r[1] for r in bad), default=0.0),
                  "server peak RSS, MB": rss.peak_mb, "temp dir growth, MB": disk_after - disk_before,
                  "refused uploads left on disk": f"{len(left)}/{len(refused)}"})
    return 0 if good_ok == len(good) and bad_fast == len(bad) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
