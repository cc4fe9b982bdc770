"""Browser benchmark of the interactive player: draw time per frame while playing, and payload size.

    python bench/bench_player.py [--notes 20000] [--minutes 10] [--models 1] [--seconds 6]

Builds a ``minutes``-long synthetic transcription with ``notes`` notes per model (five instruments
and drums, random pitches and lengths), a quiet WAV of the same length, and a page holding only the
player (:func:`mt3_demo.ui.player.player_component`). Debian's Chromium (headless, software
rendering: ``--disable-gpu``) plays it while the player records the time its own drawing takes in
each animation frame (``performance.now()`` around the work of one ``requestAnimationFrame``
callback). Three runs in the same browser:

* ``fit``: the whole 10 minutes on screen (every note visible), cached note layer;
* ``zoomed``: 128× zoom (about 5 s on screen), the view following the playhead: each page turn
  redraws the note layer;
* ``naive``: the baseline, fit view with every note redrawn every frame (no cached layer).

Prints median and p95 per run, the speed-up over the baseline, and the payload size (raw and gzip).
Targets: median frame ≤ 8 ms, payload ≤ 1 MB for 20 000 notes.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import free_port, table, write_result  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from mt3_demo.notes import Note  # noqa: E402
from mt3_demo.player import payload_json  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]


def synthetic_notes(count: int, seconds: float, seed: int) -> list[Note]:
    rng = np.random.default_rng(seed)
    onsets = np.sort(rng.uniform(0.0, seconds - 1.0, count))
    programs = [0, 33, 25, 40, 56]
    notes = []
    for k, t in enumerate(onsets):
        drum = k % 7 == 0
        notes.append(Note(float(t), float(t + (0.01 if drum else rng.uniform(0.05, 1.2))),
                          int(rng.choice([36, 38, 42, 46, 49])) if drum else int(rng.integers(28, 100)),
                          int(rng.integers(30, 127)), program=programs[k % 5], is_drum=drum))
    return notes


def write_quiet_wav(path: Path, seconds: float, rate: int = 8000) -> None:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def measure(page, seconds: float, cache: bool, zoom_steps: int) -> dict:
    """Play ``seconds`` from 60 s in; the player's own per-frame draw times."""
    get = "document.querySelector('.mt3-player').__mt3Player"
    page.evaluate(f"{get}.audio.pause()")
    page.get_by_test_id("zoom-fit").click()
    for _ in range(zoom_steps):
        page.get_by_test_id("zoom-in").click()
    page.evaluate(f"(() => {{ const p = {get}; p.state.cacheLayers = {str(cache).lower()}; "
                  "p.stats.length = 0; p.seek(60); })()")
    page.wait_for_timeout(300)
    page.evaluate(f"{get}.audio.play()")
    page.wait_for_timeout(int(seconds * 1000))
    page.evaluate(f"{get}.audio.pause()")
    stats = page.evaluate(f"Array.from({get}.stats)")
    head = float(page.get_by_test_id("roll-m0").get_attribute("data-playhead"))
    return {"frames": len(stats), "median_ms": percentile(stats, 50), "p95_ms": percentile(stats, 95),
            "max_ms": max(stats, default=float("nan")),
            "fps": len(stats) / seconds, "playhead_s": head}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notes", type=int, default=20_000, help="notes per model")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--models", type=int, default=1, help="rolls on the page")
    ap.add_argument("--seconds", type=float, default=6.0, help="playing time per measurement")
    args = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (Debian: apt-get install -y chromium)")
    import gradio as gr
    from playwright.sync_api import sync_playwright

    from mt3_demo.ui.player import player_component

    seconds = args.minutes * 60.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-player-"))
    write_quiet_wav(tmp / "original.wav", seconds)
    rolls = [(f"m{k}", f"Model {k}", synthetic_notes(args.notes, seconds, seed=k)) for k in range(args.models)]
    payload = payload_json(rolls, seconds, [{"id": "original", "label": "Original", "path": str(tmp / "original.wav")}])
    raw = payload.encode("utf-8")
    print(f"payload: {len(raw) / 1e6:.3f} MB raw, {len(gzip.compress(raw)) / 1e6:.3f} MB gzip "
          f"({args.models} × {args.notes} notes, {args.minutes:g} min)")

    with gr.Blocks() as demo:
        player_component(payload)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            quiet=True, allowed_paths=[str(tmp)], ssr_mode=False)
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(url)
            page.get_by_test_id("roll-m0").wait_for(timeout=120_000)
            page.wait_for_function("document.querySelector('.mt3-audio').readyState >= 1", timeout=60_000)
            for name, cache, zoom in (("fit", True, 0), ("zoomed ×128, following", True, 7), ("naive (no layer cache)", False, 0)):
                r = measure(page, args.seconds, cache, zoom)
                rows.append({"run": name, **r})
            browser.close()
    finally:
        demo.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows, ["run", "frames", "fps", "median_ms", "p95_ms", "max_ms"]))
    base = rows[-1]["median_ms"]
    print(f"speed-up of the cached layer over the naive redraw (median, fit view): {base / rows[0]['median_ms']:.1f}×")
    for r in rows:
        r.update(models=args.models, notes_per_model=args.notes, payload_mb=round(len(raw) / 1e6, 3),
                 payload_gzip_mb=round(len(gzip.compress(raw)) / 1e6, 3))
    write_result("bench_player", rows, {"median frame, naive ÷ cached layer (fit view)": base / rows[0]["median_ms"]})


if __name__ == "__main__":
    main()
