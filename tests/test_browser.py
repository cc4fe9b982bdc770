"""A real browser on the real page: Debian's chromium driven by Playwright (no `playwright install`).

What a first-time visitor sees, offline, on a desktop and on a phone: models that cannot run here
are not offered and say why in one line; a bad upload is flagged the moment it is uploaded; a run
shows each model's real phase (loading, decoding segment i of n, time left) in its own card, and
Stop ends it so the next run starts; on a phone the first screen holds the recording, the models
and Transcribe, and the Scores and Agreement tabs are plain tabs. Nothing overlaps.

The interactive player is driven on a real transkun run (issue 12: play, click-to-seek, source
switch, tooltip, legend, diff counts equal to results.json's scores, tap-to-seek on a phone).

Screenshots of every state go to ``$MT3_DEMO_ARTIFACTS/browser`` (default ``tests/artifacts/``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import ARTIFACTS as ARTIFACTS_ROOT
from conftest import EXAMPLES, running_app

pytestmark = pytest.mark.slow

RUN_TIMEOUT_MS = 420_000  # a 20 s clip on a slow, shared 2-core CPU
ARTIFACTS = ARTIFACTS_ROOT / "browser"
PIANO = EXAMPLES / "piano_cschumann_polonaise"
PHONE = dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)


@pytest.fixture(scope="module")
def gradio_tmp(tmp_path_factory):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return tmp_path_factory.mktemp("gradio")


@pytest.fixture(scope="module")
def app_url(browser, gradio_tmp):
    """The app, launched once for the module (offline: conftest sets HF_HUB_OFFLINE=1)."""
    with running_app(gradio_tmp) as url:
        yield url


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """The first 6 s of the piano example: a quick run."""
    import soundfile as sf

    audio, rate = sf.read(str(PIANO.with_suffix(".wav")), dtype="float32")
    path = tmp_path_factory.mktemp("clips") / "piano_first6s.wav"
    sf.write(str(path), audio[: 6 * rate], rate)
    return path


def shot(page, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def visible_boxes(page, selectors: list[str]) -> dict[str, dict]:
    """Bounding boxes of every visible element matched by the selectors (label: box)."""
    boxes = {}
    for sel in selectors:
        loc = page.locator(sel)
        for i in range(loc.count()):
            item = loc.nth(i)
            if item.is_visible():
                box = item.bounding_box()
                if box and box["width"] > 0 and box["height"] > 0:
                    boxes[f"{sel}[{i}]"] = box
    return boxes


def overlaps(boxes: dict[str, dict]) -> list[tuple[str, str]]:
    """Pairs of boxes that intersect by more than a pixel each way."""
    names = list(boxes)
    bad = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p, q = boxes[a], boxes[b]
            dx = min(p["x"] + p["width"], q["x"] + q["width"]) - max(p["x"], q["x"])
            dy = min(p["y"] + p["height"], q["y"] + q["height"]) - max(p["y"], q["y"])
            if dx > 1 and dy > 1:
                bad.append((a, b))
    return bad


# Text-bearing parts of the page that must never be drawn over one another.
LAYOUT_PARTS = ["#run-status", "#run-button", "#stop-button", "#upload-check", "#model-choice label",
                "#availability li", ".card-head h3", ".card-progress .bar", ".card-progress .phase",
                "#examples label", "#reference-input"]


def _player(page, expr: str):
    return page.evaluate(f"(() => {{ const p = document.querySelector('.mt3-player').__mt3Player; return {expr}; }})()")


def _audio_time(page) -> float:
    return page.evaluate("document.querySelector('.mt3-audio').currentTime")


def check_player(page, results: dict, out: Path) -> None:
    """Issue 12's player on a real run: transport, seek, source switch, tooltip, legend, diff counts."""
    from playwright.sync_api import expect

    roll = page.get_by_test_id("roll-transkun")
    expect(roll).to_be_visible()
    page.wait_for_function("document.querySelector('.mt3-audio').readyState >= 1", timeout=30_000)
    page.get_by_test_id("transport-play").click()
    page.wait_for_function("+document.querySelector('[data-testid=roll-transkun]').dataset.playhead >= 1",
                           timeout=2_000)
    page.screenshot(path=str(out / "player_playing.png"), full_page=True)
    box = roll.locator("canvas").bounding_box()
    page.mouse.click(_player(page, "p.timeToX(10.0)"), box["y"] + box["height"] / 2)
    assert abs(_audio_time(page) - 10.0) < 0.5
    page.get_by_test_id("transport-play").click()
    page.wait_for_function("document.querySelector('.mt3-audio').paused")
    before = _audio_time(page)
    page.get_by_test_id("transport-source").select_option(index=2)  # original L / transkun R
    page.wait_for_function("(() => { const a = document.querySelector('.mt3-audio'); "
                           "return a.src.includes('original_L') && a.readyState >= 1 && !a.seeking; })()",
                           timeout=10_000)
    assert abs(_audio_time(page) - before) < 0.05
    entry = results["models"]["transkun"]
    first = entry["notes"][0]
    spot = _player(page, f"p.locate('transkun', {first['onset']}, {first['pitch']})")
    page.mouse.move(spot["x"], spot["y"])
    expect(page.get_by_test_id("player-tooltip")).to_contain_text("Acoustic Grand Piano")
    page.screenshot(path=str(out / "player_tooltip.png"))
    legend = page.get_by_test_id("legend-transkun").locator(".mt3-legend-item").first
    legend.click()
    assert legend.get_attribute("aria-pressed") == "false"
    page.mouse.move(spot["x"], spot["y"] + 1)
    expect(page.get_by_test_id("player-tooltip")).to_be_hidden()
    legend.click()
    # Diff legend counts are the results.json scores' true/false positives and negatives.
    page.get_by_test_id("diff-toggle").check()
    counts, onset = entry["scores"]["counts"], entry["scores"]["onset"]
    matched = round(onset["precision"] * counts["est"])
    expected = {"matched": matched, "extra": counts["est"] - matched, "missed": counts["ref"] - matched}
    diff_legend = page.get_by_test_id("diff-legend-transkun")
    for kind, n in expected.items():
        assert diff_legend.locator(f"[data-kind={kind}]").get_attribute("data-count") == str(n)
    page.screenshot(path=str(out / "player_diff.png"), full_page=True)
    page.get_by_test_id("diff-toggle").uncheck()


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mt3-demo-run"]


def use_checkpoints_root(monkeypatch, root) -> None:
    """The running app's manager (the process-wide one) finds checkpoints under ``root`` from now
    on, as if it had been started with MT3_DEMO_CHECKPOINTS=root (the app reads the environment once)."""
    import dataclasses

    from mt3_demo.manager import get_manager

    manager = get_manager()
    monkeypatch.setattr(manager, "settings", dataclasses.replace(manager.settings, checkpoints_root=root))


def test_offline_start_offers_only_runnable_models(browser, app_url):
    """Offline, without checkpoints: each model that cannot load is listed with one line, not offered."""
    import torch
    from playwright.sync_api import expect

    from mt3_demo.manager import ModelManager
    from mt3_demo.options import read_env

    manager = ModelManager(device=torch.device("cpu"), settings=read_env()[0])  # the app's view
    names = {m: manager.spec(m).display_name for m in manager.model_ids()}
    unusable = [m for m in names if not manager.availability(m).usable]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(app_url)
        expect(page.locator("#run-button")).to_be_visible(timeout=60_000)
        offered = page.locator("#model-choice label").all_inner_texts()
        assert len(offered) == len(names) - len(unusable) and offered
        for model_id in unusable:
            assert not any(names[model_id] in label for label in offered), (model_id, offered)
            item = page.locator(f'#availability li[data-model="{model_id}"]')
            expect(item).to_contain_text(names[model_id])
            why = item.locator(".why")
            text = why.inner_text().strip()
            assert text.endswith(".") and ". " not in text, text  # one sentence
            line = float(why.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"))
            assert why.bounding_box()["height"] < 1.8 * line, text  # one line at desktop width
            expect(item.locator("details")).not_to_have_attribute("open", "")
        if unusable:  # the fix is behind "details"
            first = page.locator(f'#availability li[data-model="{unusable[0]}"]')
            first.locator("summary").click()
            expect(first.locator("details")).to_contain_text("To fix")
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        shot(page, "01_desktop_offline_start")
    finally:
        page.close()


def test_test_weights_are_labelled_as_such(browser, app_url, tmp_path, monkeypatch):
    """With the tiny fixtures laid out as the README says, all four models are offered, and the
    three random ones say "test weights" — never "official weights"."""
    from playwright.sync_api import expect

    from conftest import FIXTURES

    root = tmp_path / "ckpt"
    for model_id, files in {"mt3": ["mt3/tiny_model/mt3.pth", "mt3/tiny_model/config.json"],
                            "mr_mt3": ["mr_mt3/set_b/model.ckpt", "mr_mt3/set_b/config.json"],
                            "yourmt3": ["yourmt3/set_a/tiny_model/last.ckpt"]}.items():
        (root / model_id).mkdir(parents=True)
        for f in files:
            shutil.copy(FIXTURES / f, root / model_id)
    use_checkpoints_root(monkeypatch, root)  # the page load refreshes the list
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(app_url)
        expect(page.locator("#model-choice label")).to_have_count(4, timeout=60_000)
        labels = page.locator("#model-choice label").all_inner_texts()
        assert sum("test weights" in label for label in labels) == 3, labels
        assert not any("official" in label for label in labels)
        expect(page.locator("#availability li")).to_have_count(0)
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        shot(page, "01b_desktop_test_weights", full_page=False)
    finally:
        page.close()


def test_bad_upload_is_flagged_on_upload(browser, app_url, tmp_path):
    from playwright.sync_api import expect

    bad = tmp_path / "recording.wav"
    bad.write_bytes(b"this is plain text, not a recording\n" * 20)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(app_url)
        expect(page.locator("#run-button")).to_be_visible(timeout=60_000)
        page.locator("#audio-input input[type=file]").set_input_files(str(bad))
        note = page.locator("#upload-check")
        expect(note).to_contain_text("recording.wav", timeout=30_000)
        expect(note).to_contain_text("not an audio file")
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        shot(page, "02_desktop_bad_upload")
    finally:
        page.close()


def test_example_run_shows_results(browser, app_url, gradio_tmp, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    try:
        page.goto(app_url)
        expect(page.locator("#run-button")).to_be_visible(timeout=60_000)
        # The embedded default is preselected; the example brings its ground-truth MIDI along.
        expect(page.locator("#model-choice input[type=checkbox]").first).to_be_checked()
        page.locator("#examples").get_by_text("Solo piano").first.click()
        expect(page.locator("#reference-input")).to_contain_text("piano_cschumann_polonaise",
                                                                 timeout=30_000)
        page.locator("#run-button").click()

        card = page.locator("#card-0")
        expect(card.locator(".piano-roll img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(card.locator(".card-head").first).to_contain_text("done")
        stats = card.locator(".card-stats").first  # gr.HTML puts the class on two nested divs
        expect(stats).to_be_visible()
        expect(stats).to_contain_text("Notes")
        expect(stats).to_contain_text("RTF")
        assert int(stats.locator(".stat .v").first.inner_text()) > 0
        expect(card.locator(".midi-download").first).to_be_visible()
        expect(card.locator(".midi-download").first).to_contain_text("Download MIDI")
        # The whole run is over when the report is offered and the scores are filled in.
        expect(page.locator("#report-button")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(page.locator("#run-status")).to_contain_text("Done")
        page.get_by_role("tab", name="Scores").click()
        expect(page.locator("#comparison")).to_contain_text("F1")
        expect(page.locator("#comparison")).to_contain_text("Instrument leakage")
        expect(card.locator(".stems-download").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "desktop_result.png"), full_page=True)
        (results_path,) = (gradio_tmp / "mt3-demo-runs").glob("*/results.json")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        check_player(page, json.loads(results_path.read_text()), ARTIFACTS)

        # The same results at phone width: everything reflows into one column.
        page.set_viewport_size({"width": 390, "height": 844})
        expect(card.locator(".piano-roll img")).to_be_visible()
        assert no_horizontal_scroll(page)
        labels = ["label[data-testid=block-label]", ".icon-button-wrapper"]
        assert not overlaps(visible_boxes(page, labels)), (
            overlaps(visible_boxes(page, labels)), page.locator(labels[0]).all_inner_texts())
        page.screenshot(path=str(tmp_path / "phone_result.png"), full_page=True)
        roll = page.get_by_test_id("roll-transkun")
        roll.evaluate("e => e.scrollIntoView({block: 'end'})")  # below the sticky transport
        box = roll.locator("canvas").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 391
        x, y = _player(page, "p.timeToX(5.0)"), box["y"] + box["height"] / 2
        hit = page.evaluate(f"(() => {{ const e = document.elementFromPoint({x}, {y}); "
                            "return e ? e.tagName + '.' + e.className : 'none'; })()")
        assert hit == "CANVAS.mt3-canvas", (hit, x, y, box)
        page.mouse.click(x, y)  # a tap
        assert abs(_audio_time(page) - 5.0) < 0.5
        page.screenshot(path=str(ARTIFACTS / "player_phone.png"))
    finally:
        page.close()
    assert (tmp_path / "desktop_result.png").stat().st_size > 10_000


def test_progress_phases_stop_and_next_run(browser, app_url):
    """A run reports its real phase in its card; Stop ends it, and the next run starts and finishes."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(app_url)
        expect(page.locator("#run-button")).to_be_visible(timeout=60_000)
        page.locator("#examples").get_by_text("Solo piano").first.click()
        expect(page.locator("#reference-input")).to_contain_text("piano_cschumann_polonaise", timeout=30_000)
        expect(page.locator("#examples input[type=radio]").first).to_be_checked()  # the chosen one is marked
        page.locator("#run-button").click()

        progress = page.locator("#card-0 .card-progress")
        phases: list[str] = []
        deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            if progress.count():
                phase = progress.first.get_attribute("data-phase") or ""
                if not phases or phases[-1] != phase:
                    phases.append(phase)
                if re.search(r"decoding segment [2-9]\d* of \d+ · ~\d+ (s|min) left", phase):
                    break
            time.sleep(0.2)
        assert re.search(r"segment [2-9]\d* of (\d+)", phases[-1]), phases
        # Phases in their real order: loading (or starting) → segment 1 (features) → later segments.
        assert phases[0] in ("loading weights", "starting") or phases[0].startswith("computing features"), phases
        numbers = [int(m.group(1)) for p in phases if (m := re.search(r"segment (\d+) of", p))]
        assert numbers == sorted(numbers)
        expect(page.locator("#run-status")).to_contain_text("Transcribing")
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        shot(page, "03_desktop_progress")

        page.locator("#stop-button").click()
        expect(page.locator("#run-status")).to_contain_text("Stopped", timeout=30_000)
        expect(page.locator("#card-0 .card-head").first).to_contain_text("stopped")
        expect(page.locator("#stop-button")).to_be_hidden()
        shot(page, "04_desktop_stopped")
        deadline = time.monotonic() + 300
        while worker_threads() and time.monotonic() < deadline:  # it ends at its next segment
            time.sleep(0.5)
        assert not worker_threads(), "the stopped run's worker is still transcribing"

        page.locator("#run-button").click()  # the queue is free: this run starts, and finishes
        expect(page.locator("#card-0 .card-progress")).to_be_visible(timeout=60_000)
        card = page.locator("#card-0")
        expect(card.locator(".piano-roll img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(card.locator(".card-head").first).to_contain_text("done")
        one_or_many = re.compile(r"(?<!\d)(1 note(?!s)|(?!1 notes)\d+ notes)")  # never "1 notes"
        expect(card.locator(".card-head").first).to_contain_text(one_or_many)
        stats = card.locator(".card-stats").first
        expect(stats).to_contain_text("RTF")
        assert stats.locator("[title]").count() > 0  # jargon explained on hover
        expect(card.locator(".midi-download").first).to_contain_text("Download MIDI")
        expect(page.locator("#report-button")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(page.locator("#run-status")).to_contain_text("Done")
        page.get_by_role("tab", name="Scores").click()
        expect(page.locator("#comparison")).to_contain_text("F1")
        # One model: no "best" to highlight.
        assert page.locator("#comparison td.best").count() == 0
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        shot(page, "05_desktop_result")
    finally:
        page.close()


def test_phone_first_screen_and_results(browser, app_url, short_clip):
    """At 390 px: upload, models and Transcribe on the first screen; results in one column;
    Scores and Agreement are tabs you can see, not items of a "…" menu."""
    from playwright.sync_api import expect

    page = browser.new_page(**PHONE)
    try:
        page.goto(app_url)
        for selector in ("#audio-input", "#model-choice", "#run-button"):
            expect(page.locator(selector)).to_be_visible(timeout=60_000)
            box = page.locator(selector).bounding_box()
            assert box["y"] >= 0 and box["y"] + box["height"] <= 844, (selector, box)  # first screen
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1
        assert no_horizontal_scroll(page)
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        # Gradio hides "Use via API" on a phone; no "·" may be left dangling before "Settings".
        footer = [t.strip() for t in page.locator("footer").inner_text().split("\n") if t.strip()]
        assert footer and footer[0] != "·" and footer[-1] != "·", footer
        shot(page, "06_phone_start", full_page=False)

        page.locator("#audio-input input[type=file]").set_input_files(str(short_clip))
        expect(page.locator("#upload-check")).to_contain_text("Ready", timeout=30_000)
        page.locator("#run-button").click()
        expect(page.locator("#report-button")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        for name in ("Summary", "Scores", "Agreement"):
            tab = page.get_by_role("tab", name=name)
            expect(tab).to_be_visible()
            box = tab.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, (name, box)
        # Component labels never run under their own icon buttons (download, share, clear).
        labels = ["label[data-testid=block-label]", ".icon-button-wrapper"]
        assert not overlaps(visible_boxes(page, labels)), overlaps(visible_boxes(page, labels))
        page.get_by_role("tab", name="Summary").click()
        table = page.locator("#summary-table .mt3-table-wrap")
        expect(table).to_be_visible()
        assert table.evaluate("e => getComputedStyle(e).overflowX") == "auto"  # scrolls inside itself
        assert no_horizontal_scroll(page)
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        shot(page, "07_phone_result")
        page.get_by_role("tab", name="Agreement").click()
        expect(page.locator("#comparison")).to_contain_text("two or more models")
        shot(page, "08_phone_agreement", full_page=False)
    finally:
        page.close()


def test_side_by_side_with_a_failing_model(browser, app_url, short_clip, tmp_path, monkeypatch):
    """Three models, one with a corrupt file: its card says so once, in one sentence (details
    folded; no toast, nothing in the summary but a pointer to the card); the others are compared."""

    from playwright.sync_api import expect

    from conftest import FIXTURES

    root = tmp_path / "ckpt"
    (root / "mr_mt3").mkdir(parents=True)
    for f in ("model.ckpt", "config.json"):
        shutil.copy(FIXTURES / "mr_mt3/set_b" / f, root / "mr_mt3")
    (root / "mt3").mkdir()
    (root / "mt3" / "mt3.pth").write_bytes(os.urandom(5000))  # not a checkpoint
    use_checkpoints_root(monkeypatch, root)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(app_url)
        expect(page.locator("#model-choice label")).to_have_count(3, timeout=60_000)
        for label in page.locator("#model-choice label").all():
            if not label.locator("input").is_checked():
                label.click()
        page.locator("#audio-input input[type=file]").set_input_files(str(short_clip))
        expect(page.locator("#upload-check")).to_contain_text("Ready", timeout=30_000)
        page.locator("#run-button").click()
        expect(page.locator("#report-button")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        failed = page.locator(".model-card", has=page.locator(".badge.error"))
        expect(failed).to_have_count(1)
        sentence = failed.locator(".card-error").inner_text().strip()
        assert re.search(r"[^.?!][.?!]$", sentence) and ". " not in sentence, sentence  # one sentence
        assert "Traceback" not in sentence
        assert page.locator(".toast-body").count() == 0  # said once: in the card, not in a toast too
        page.get_by_role("tab", name="Summary").click()
        expect(page.locator("#summary-table")).to_contain_text("failed (see its card)")
        assert sentence not in page.locator("#summary-table").inner_text()
        page.get_by_role("tab", name="Agreement").click()
        expect(page.locator("#comparison table.heatmap")).to_be_visible()
        assert not overlaps(visible_boxes(page, LAYOUT_PARTS))
        shot(page, "09_desktop_two_models_one_failed")
    finally:
        page.close()
