"""A real browser on the real page: Debian's chromium driven by Playwright (no `playwright install`).

Clicks the piano example, runs the embedded default model and waits for its card: piano roll,
stats and MIDI download must be visible. Then drives the interactive player on that run (issue 12:
play, click-to-seek, source switch, tooltip, legend, diff counts equal to results.json's scores) and
checks that a phone-sized viewport shows the main controls without horizontal scrolling, tap-to-seek
included. Screenshots go to the test's tmp dir; the player's to tests/artifacts/browser/.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import running_app

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "browser"  # the player's screenshots
RUN_TIMEOUT_MS = 420_000  # a 20 s clip on a slow, shared 2-core CPU


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def gradio_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("gradio")


@pytest.fixture(scope="module")
def app_url(browser, gradio_tmp):
    """The app, launched once for the module, with Gradio's files in a private temp dir."""
    with running_app(gradio_tmp) as url:
        yield url


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


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
        page.get_by_role("tab", name="Scores vs reference").click()
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


def test_phone_viewport_shows_main_controls(browser, app_url, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page.goto(app_url)
        for selector in ("#audio-input", "#model-choice", "#run-button", "#examples"):
            expect(page.locator(selector)).to_be_visible(timeout=60_000)
        # Controls fit the screen: the run button is no wider than the viewport, nothing scrolls sideways.
        box = page.locator("#run-button").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1
        assert no_horizontal_scroll(page)
        page.screenshot(path=str(tmp_path / "phone_start.png"), full_page=True)
    finally:
        page.close()
