"""A real browser on the real page: Debian's chromium driven by Playwright (no `playwright install`).

Clicks the piano example, runs the embedded default model and waits for its card: piano roll,
stats and MIDI download must be visible. Then checks that a phone-sized viewport shows the main
controls without horizontal scrolling. Screenshots go to the test's tmp dir.
"""
from __future__ import annotations

import shutil

import pytest

from conftest import running_app

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
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
def app_url(browser, tmp_path_factory):
    """The app, launched once for the module, with Gradio's files in a private temp dir."""
    with running_app(tmp_path_factory.mktemp("gradio")) as url:
        yield url


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_example_run_shows_results(browser, app_url, tmp_path):
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
        page.screenshot(path=str(tmp_path / "desktop_result.png"), full_page=True)

        # The same results at phone width: everything reflows into one column.
        page.set_viewport_size({"width": 390, "height": 844})
        expect(card.locator(".piano-roll img")).to_be_visible()
        assert no_horizontal_scroll(page)
        page.screenshot(path=str(tmp_path / "phone_result.png"), full_page=True)
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
