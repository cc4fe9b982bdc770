"""The interactive player: its payload (pure Python) and, in a real browser, the standalone component.

The browser part builds a minimal ``gr.Blocks`` page with :func:`mt3_demo.ui.player.player_component`
on synthetic notes and synthesized WAVs, then drives Debian's Chromium with Playwright (as
tests/test_browser.py does). Screenshots of each state go to ``tests/artifacts/player/``.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from conftest import ARTIFACTS as ARTIFACTS_ROOT
from mt3_demo.metrics import note_diff, score
from mt3_demo.notes import Note
from mt3_demo.player import decode_notes, encode_payload, payload_json

ARTIFACTS = ARTIFACTS_ROOT / "player"
DURATION = 20.0


def reference_notes() -> list[Note]:
    piano = [Note(i * 0.5, i * 0.5 + 0.4, 60 + (i * 5) % 24, 90) for i in range(38)]
    drums = [Note(float(i), i + 0.01, 36 if i % 2 else 38, 100, is_drum=True) for i in range(19)]
    return piano + drums


def model_notes() -> dict[str, list[Note]]:
    ref = reference_notes()
    # Model "a": every third note 80 ms late (outside the 50 ms window), plus an invented bass note.
    a = [Note(n.onset + (0.08 if k % 3 == 0 else 0.02), n.offset, n.pitch, 80, n.program, n.is_drum)
         for k, n in enumerate(ref)] + [Note(3.0, 4.0, 40, 70, program=33)]
    b = [n for k, n in enumerate(ref) if k % 4]  # model "b" misses every fourth note
    return {"a": a, "b": b}


# ------------------------------------------------------------------------------------------------
# Payload


def test_payload_round_trips_notes_in_onset_order():
    notes = [Note(1.25, 2.0, 64, 70, program=40), Note(0.5, 0.75, 60, 90), Note(0.5, 0.51, 36, 100, is_drum=True)]
    p = encode_payload([("m", "Model", notes)], duration=3.0)
    back = decode_notes(p["rolls"][0]["notes"], p["instruments"])
    assert [(d["onset"], d["offset"], d["pitch"], d["velocity"], d["instrument"]) for d in back] == [
        (0.5, 0.51, 36, 100, "Drums"), (0.5, 0.75, 60, 90, "Acoustic Grand Piano"), (1.25, 2.0, 64, 70, "Violin")]
    assert {i["name"]: i["drum"] for i in p["instruments"]} == {"Drums": True, "Acoustic Grand Piano": False,
                                                                "Violin": False}
    assert all(i["color"].startswith("#") for i in p["instruments"])
    assert p["reference"] is None and p["diff_modes"] == {} and "diff" not in p["rolls"][0]
    json.loads(payload_json([("m", "Model", notes)], duration=3.0))


def test_payload_diff_counts_are_the_scores():
    ref, models = reference_notes(), model_notes()
    p = encode_payload([(k, k.upper(), v) for k, v in models.items()], DURATION, reference=ref)
    for roll in p["rolls"]:
        est = models[roll["id"]]
        for mode in ("onset", "program_aware"):
            d = roll["diff"][mode]
            expected = note_diff(est, ref, mode)
            assert (d["matched"], d["extra"], d["missed"]) == (expected["matched"], expected["extra"], expected["missed"])
            assert d["est"].count("1") == d["matched"] and len(d["est"]) == len(est)
            assert d["ref"].count("1") == d["matched"] and len(d["ref"]) == len(ref)
            assert score(est, ref)[mode]["precision"] == pytest.approx(d["matched"] / len(est), abs=1e-12)
    assert p["rolls"][0]["diff"]["onset"]["extra"] > 0 and p["rolls"][1]["diff"]["onset"]["missed"] > 0


def synthetic_notes(count: int, seconds: float) -> list[Note]:
    import numpy as np

    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, seconds - 1, count))
    programs = [0, 33, 25, 40, 56]
    return [Note(float(t), float(t + rng.uniform(0.05, 1.0)), int(rng.integers(28, 100)), int(rng.integers(30, 127)),
                 program=programs[k % 5], is_drum=(k % 7 == 0)) for k, t in enumerate(onsets)]


def test_payload_for_20000_notes_is_under_a_megabyte():
    text = payload_json([("m", "Model", synthetic_notes(20_000, 600.0))], 600.0)
    assert len(text.encode("utf-8")) <= 1_000_000


# ------------------------------------------------------------------------------------------------
# Browser


@pytest.fixture(scope="module")
def player_url(browser, tmp_path_factory):
    """A page holding only the player: two models, a reference, five audio sources."""
    import gradio as gr

    from conftest import free_port
    from mt3_demo.synth import mix, render_audio, write_wav
    from mt3_demo.ui.player import player_component

    out = tmp_path_factory.mktemp("player")
    ref = reference_notes()
    original, sr, _ = render_audio(ref, 22050, end_time=DURATION, backend="fallback")
    write_wav(out / "original.wav", original, sr)
    sources = [{"id": "original", "label": "Original recording", "path": str(out / "original.wav")}]
    for model_id, notes in model_notes().items():
        synth, _, _ = render_audio(notes, sr, end_time=DURATION, backend="fallback")
        write_wav(out / f"{model_id}.wav", synth, sr)
        write_wav(out / f"{model_id}_mix.wav", mix(original, synth), sr)
        sources += [{"id": model_id, "label": f"Model {model_id.upper()}, synthesized", "path": str(out / f"{model_id}.wav")},
                    {"id": f"{model_id}-mix", "label": f"Original L / {model_id.upper()} R",
                     "path": str(out / f"{model_id}_mix.wav")}]
    payload = payload_json([(k, f"Model {k.upper()}", v) for k, v in model_notes().items()], DURATION, sources,
                           reference=ref)
    with gr.Blocks() as demo:
        gr.Markdown("Player test page")
        player_component(payload, elem_id="player")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            quiet=True, allowed_paths=[str(out)], ssr_mode=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield url
    finally:
        demo.close()


ROLLS = ("a", "b")


@contextmanager
def _player_page(browser, url, **context):
    """A page on the player, loaded and ready to play; on leaving, no script error may have occurred
    on it (checked when the test's own steps passed) and it is closed."""
    from playwright.sync_api import expect

    page = browser.new_page(**context)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url)
        for r in ROLLS:
            expect(page.get_by_test_id(f"roll-{r}")).to_be_visible(timeout=60_000)
        page.wait_for_function("document.querySelector('.mt3-audio').readyState >= 1", timeout=30_000)
        yield page
        assert errors == []
    finally:
        page.close()


def _playheads(page) -> list[float]:
    return [float(page.get_by_test_id(f"roll-{r}").get_attribute("data-playhead")) for r in ROLLS]


def _audio_time(page) -> float:
    return page.evaluate("document.querySelector('.mt3-audio').currentTime")


def _player(page, expr: str):
    return page.evaluate(f"(() => {{ const p = document.querySelector('.mt3-player').__mt3Player; return {expr}; }})()")


@pytest.mark.slow
def test_transport_playhead_seek_and_source(browser, player_url):
    with _player_page(browser, player_url, viewport={"width": 1280, "height": 900}) as page:
        page.screenshot(path=str(ARTIFACTS / "01_loaded.png"), full_page=True)
        assert _playheads(page) == [0.0, 0.0]
        page.get_by_test_id("transport-play").click()
        # Within 2 s of pressing play, every roll's playhead has moved on by at least 1 s.
        page.wait_for_function(
            "[...document.querySelectorAll('[data-testid^=roll-]')].every(r => +r.dataset.playhead >= 1)",
            timeout=2_000)
        heads = _playheads(page)
        assert min(heads) >= 1.0
        page.screenshot(path=str(ARTIFACTS / "02_playing.png"), full_page=True)

        # Clicking a roll seeks there (while playing): the audio lands within 0.5 s of the point.
        x = _player(page, "p.timeToX(12.0)")
        box = page.get_by_test_id("roll-b").locator("canvas").bounding_box()
        page.mouse.click(x, box["y"] + box["height"] / 2)
        assert abs(_audio_time(page) - 12.0) < 0.5
        page.get_by_test_id("transport-play").click()  # pause
        page.wait_for_function("document.querySelector('.mt3-audio').paused")
        before = _audio_time(page)
        assert abs(before - 12.0) < 0.5

        # Switching the source keeps the position.
        src_before = page.evaluate("document.querySelector('.mt3-audio').src")
        page.get_by_test_id("transport-source").select_option(label="Original L / A R")
        page.wait_for_function(
            f"(() => {{ const a = document.querySelector('.mt3-audio'); return a.src !== {json.dumps(src_before)} "
            "&& a.readyState >= 1 && !a.seeking; })()", timeout=10_000)
        assert "a_mix.wav" in page.evaluate("document.querySelector('.mt3-audio').src")
        assert abs(_audio_time(page) - before) < 0.05
        page.wait_for_function(
            f"Math.abs(+document.querySelector('[data-testid=roll-a]').dataset.playhead - {before}) < 0.05")

        # Keyboard: → seeks 5 s, space plays.
        page.locator("body").press("ArrowRight")
        assert abs(_audio_time(page) - (before + 5)) < 0.1
        page.keyboard.press("Space")
        page.wait_for_function("!document.querySelector('.mt3-audio').paused")
        page.keyboard.press("Space")
        page.screenshot(path=str(ARTIFACTS / "03_seek_and_source.png"), full_page=True)


@pytest.mark.slow
def test_hover_legend_zoom_and_diff(browser, player_url):
    with _player_page(browser, player_url, viewport={"width": 1280, "height": 900}) as page:
        tooltip = page.get_by_test_id("player-tooltip")
        # Hover a piano note: pitch name (with the sharp sign), instrument, times, velocity.
        # Reference note 1 (0.5 s, pitch 65 = F4) arrives in model "a" 20 ms late, at 0.52 s.
        spot = _player(page, "p.locate('a', 0.52, 65)")
        page.mouse.move(spot["x"], spot["y"])
        assert tooltip.is_visible()
        text = tooltip.inner_text()
        assert "F4" in text and "Acoustic Grand Piano" in text and "0.520–0.900 s" in text and "velocity 80" in text
        sharp = _player(page, "p.locate('a', 1.02, 70)")  # pitch 70 = A♯4
        page.mouse.move(sharp["x"], sharp["y"])
        assert "A♯4" in tooltip.inner_text()
        page.screenshot(path=str(ARTIFACTS / "04_tooltip.png"))

        # Clicking the bass in the legend hides it: no tooltip on its note, its colour gone.
        bass = _player(page, "p.locate('a', 3.0, 40)")
        page.mouse.move(bass["x"], bass["y"])
        assert "Electric Bass (finger)" in tooltip.inner_text()
        item = page.get_by_test_id("legend-a").locator("[data-instrument='Electric Bass (finger)']")
        item.click()
        assert item.get_attribute("aria-pressed") == "false"
        page.mouse.move(bass["x"], bass["y"] + 1)
        assert not tooltip.is_visible()
        page.screenshot(path=str(ARTIFACTS / "05_legend_hidden.png"))
        item.click()
        page.mouse.move(bass["x"], bass["y"])
        assert tooltip.is_visible()

        # Zoom in: the rolls scroll sideways together (one time axis), the page does not.
        for _ in range(3):
            page.get_by_test_id("zoom-in").click()
        widths = page.evaluate("[...document.querySelectorAll('.mt3-spacer')].map(s => s.offsetWidth)")
        assert len(set(widths)) == 1 and widths[0] > 7 * page.evaluate("document.querySelector('.mt3-scroller').clientWidth")
        page.evaluate("document.querySelector('[data-testid=roll-a] .mt3-scroller').scrollLeft = 500")
        page.wait_for_function("document.querySelector('[data-testid=roll-b] .mt3-scroller').scrollLeft === 500")
        page.screenshot(path=str(ARTIFACTS / "06_zoomed.png"), full_page=True)
        page.get_by_test_id("zoom-fit").click()

        # Diff: legend counts are the scores' matched / extra / missed, in both matching modes.
        page.get_by_test_id("diff-toggle").check()
        ref, models = reference_notes(), model_notes()
        for mode in ("onset", "program_aware"):
            page.get_by_test_id("diff-mode").select_option(mode)
            for r in ROLLS:
                d = note_diff(models[r], ref, mode)
                legend = page.get_by_test_id(f"diff-legend-{r}")
                for kind in ("matched", "extra", "missed"):
                    assert legend.locator(f"[data-kind={kind}]").get_attribute("data-count") == str(d[kind])
        page.get_by_test_id("diff-mode").select_option("onset")
        page.screenshot(path=str(ARTIFACTS / "07_diff.png"), full_page=True)


@pytest.mark.slow
def test_phone_width_one_column_tap_to_seek(browser, player_url):
    with _player_page(browser, player_url, viewport={"width": 390, "height": 844}, is_mobile=True,
                      has_touch=True) as page:
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        boxes = [page.get_by_test_id(f"roll-{r}").bounding_box() for r in ROLLS]
        assert all(b["x"] >= 0 and b["x"] + b["width"] <= 391 for b in boxes)
        assert boxes[1]["y"] >= boxes[0]["y"] + boxes[0]["height"]  # stacked: one column
        play = page.get_by_test_id("transport-play").bounding_box()
        assert play["x"] + play["width"] <= 391
        canvas = page.get_by_test_id("roll-a").locator("canvas")
        box = canvas.bounding_box()
        x = _player(page, "p.timeToX(8.0)")
        page.touchscreen.tap(x, box["y"] + box["height"] / 2)
        assert abs(_audio_time(page) - 8.0) < 0.5
        page.wait_for_function("Math.abs(+document.querySelector('[data-testid=roll-a]').dataset.playhead - 8) < 0.5")
        page.screenshot(path=str(ARTIFACTS / "08_phone.png"), full_page=True)

        # Two-finger pinch (raw touch events through the DevTools protocol) zooms in.
        width_before = page.evaluate("document.querySelector('.mt3-spacer').offsetWidth")
        cdp = page.context.new_cdp_session(page)
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for k, half in enumerate((20, 40, 60, 80)):
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart" if k == 0 else "touchMove", "touchPoints": [
                {"x": cx - half, "y": cy, "id": 0}, {"x": cx + half, "y": cy, "id": 1}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        assert page.evaluate("document.querySelector('.mt3-spacer').offsetWidth") > 2 * width_before
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
