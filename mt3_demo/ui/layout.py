"""The Gradio Blocks page: where each component sits, and which handler each event calls.

Two ways in: the page and the API endpoint. The page has two columns (one above the other on a
phone), in the order a visitor acts: on the left the recording or an example, the models,
*Transcribe*; on the right what happens — the status line with the current model's phase, the
player (the original and each model's roll under one transport, growing as each model finishes),
the cross-model tabs, a card per model. At 1440×900 the progress and then the first roll are in
view without scrolling; a small script brings them into view wherever the page was scrolled. The
API endpoint ``/transcribe`` is the same run, answered with MIDI files, piano-roll PNGs, results
JSON and the report zip. Room is left for more views per card or per run: add a module beside
``render`` and a component group beside the cards.
"""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from .. import runs
from ..manager import Availability, ModelManager, get_manager
from ..options import Settings
from . import advanced, handlers, leaderboard, render, server_errors
from .components import Card, Page
from .player import player_component
from .session import PageState
from .zerogpu import on_gpu

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES_DIR = ROOT / "examples_audio"
CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "ui.css"
MAX_UPLOAD = "200mb"  # 10 minutes of 48 kHz stereo WAV is ~110 MB

# Example labels come from clips.json; these say what each kind demonstrates.
KIND_LABEL = {"piano": "Solo piano", "band": "Band: piano, guitar, bass, drums",
              "ensemble": "Winds + strings", "drums": "Drums only"}

# Pressing Transcribe brings the results column's top (status, then the player) into view unless
# it is already in the upper half of the window (a phone: the results sit below the inputs). It runs
# in the browser before the run's request (a separate js-only event would wait for the whole run);
# the inputs pass through unchanged.
SHOW_RESULTS_JS = """(...inputs) => {
  const top = document.querySelector('#results-column');
  const y = top ? top.getBoundingClientRect().top : 0;
  if (top && (y < 0 || y > window.innerHeight / 2)) {
    top.style.minHeight = window.innerHeight + 'px';  // room to scroll it to the top before results come
    top.scrollIntoView({block: 'start'});
  }
  return inputs;
}"""


def examples() -> tuple[list[list[str | None]], list[str]]:
    """Example clips (wav + ground-truth mid) and labels from examples_audio/clips.json."""
    meta = {}
    if (EXAMPLES_DIR / "clips.json").is_file():
        meta = json.loads((EXAMPLES_DIR / "clips.json").read_text())
    order = list(KIND_LABEL)  # piano first: it is what the embedded default model is for
    kind_of = lambda w: meta.get(w.stem, {}).get("kind")  # noqa: E731
    wavs = sorted(EXAMPLES_DIR.glob("*.wav"),
                  key=lambda w: (order.index(kind_of(w)) if kind_of(w) in order else len(order), w.name))
    rows, labels = [], []
    for wav in wavs:
        mid = wav.with_suffix(".mid")
        info = meta.get(wav.stem, {})
        composer = _short_name(str(info.get("composer", "")).split(" (")[0].split(";")[0])
        piece = str(info.get("piece", wav.stem)).split(" (")[0].split(",")[0].split(" in ")[0]
        kind = KIND_LABEL.get(info.get("kind", ""), info.get("kind", ""))
        seconds = info.get("wav", {}).get("duration_s")
        rows.append([str(wav), str(mid) if mid.is_file() else None])
        labels.append(f"{kind} — {piece}, {composer}" + (f" ({seconds:.0f} s)" if seconds else ""))
    return rows, labels


def _short_name(name: str) -> str:
    """"Clara Schumann" -> "C. Schumann": short example labels keep Transcribe on the first screen."""
    parts = name.split()
    return " ".join([p[0] + "." if not p.endswith(".") else p for p in parts[:-1]] + parts[-1:])


def build_demo(manager: ModelManager | None = None, settings: Settings | None = None) -> gr.Blocks:
    """Build the Blocks app. Models load lazily on first use (eagerly when the host asks for it).

    ``settings``: the door's (``app.py`` reads the environment once); default: the manager's, else
    the defaults."""
    settings = settings or (manager.settings if manager is not None else Settings())
    manager = manager or get_manager(settings)
    if settings.eager:
        # ZeroGPU wants weights on the (emulated) GPU at import time, not inside the GPU call.
        for model_id, error in manager.preload().items():
            log.warning("preload %s failed: %s", model_id, error)
    # fill_width: the page uses the window up to ui.css's 1480 px (the results column holds the
    # rolls and the score tables; Gradio's default would stop at 1216 px on a 1440 px screen).
    with gr.Blocks(title="MT3 family — side-by-side transcription", delete_cache=(3600, runs.RUN_TTL_S),
                   fill_width=True) as demo:
        avail = manager.availabilities()  # one snapshot for the first render; each page load refreshes it
        header = gr.HTML(render.header_html(manager, avail), padding=False, elem_id="page-header")
        # With an `evaluate` folder (MT3_DEMO_LEADERBOARD) the page gets two tabs, Transcribe first;
        # without one, no tab bar at all.
        with_board = bool(settings.leaderboard)
        with gr.Tabs(elem_id="page-tabs") if with_board else contextlib.nullcontext():
            with gr.Tab("Transcribe", elem_id="tab-transcribe") if with_board else contextlib.nullcontext():
                with gr.Row(equal_height=False, elem_id="main-row"):
                    with gr.Column(scale=2, min_width=340, elem_id="inputs-column"):
                        inputs = _inputs(manager, settings, avail)
                    with gr.Column(scale=3, min_width=340, elem_id="results-column"):
                        page = _results(max(1, len(manager.model_ids())), render.idle_status(manager, avail))
                with gr.Accordion("About the models", open=False, elem_classes="phone-only"):
                    gr.HTML(render.about_models_html(manager, avail), padding=False)
            leaderboard.add_tab(demo, settings.leaderboard)
        _wire_runs(page, inputs, manager, settings)
        _wire_small_events(demo, page, inputs, header, manager, settings)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return demo


def _inputs(manager: ModelManager, settings: Settings, avail: dict[str, Availability]) -> dict[str, Any]:
    """In the order a visitor acts: the recording or an example, the models, Transcribe; then the
    optional reference MIDI and the models that cannot run here. ``avail``: the page's snapshot."""
    choices, value = render.model_choices(manager, avail)
    # A short label (on a phone a long one runs under its buttons) and the browser's own one-line
    # player instead of a waveform: the inputs stay compact.
    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="audio-input",
                     label="Recording", waveform_options=gr.WaveformOptions(show_recording_waveform=False))
    upload_note = gr.HTML(handlers.check_upload(None, settings.max_seconds), padding=False,
                          elem_id="upload-check")
    rows, labels = examples()
    example = gr.Radio(choices=[(label, i) for i, label in enumerate(labels)], value=None,
                       label="…or an example", elem_id="examples")
    models = gr.CheckboxGroup(choices=choices, value=value, label="Models", elem_id="model-choice",
                              info="Each transcribes the same 16 kHz mono audio, one after another.")
    run = gr.Button(variant="primary", elem_id="run-button", **render.run_button(manager, avail))
    # Per model, collapsed, after Transcribe (what a visitor does first stays on the first screen).
    decode = advanced.controls(manager, avail)
    reference = gr.File(label="Reference MIDI (optional)", file_types=[".mid", ".midi"], elem_id="reference-input",
                        height=120)
    availability = gr.HTML(render.availability_html(manager, avail), padding=False, elem_id="availability")
    return dict(audio=audio, upload_note=upload_note, reference=reference, models=models, advanced=decode,
                availability=availability, run=run, example=example, example_rows=rows)


def _results(n_cards: int, idle_status: str) -> Page:
    """The results column: status (+ Stop), the report, the player, the tabs, one card per model."""
    with gr.Row(equal_height=False, elem_id="status-row"):
        status = gr.HTML(idle_status, padding=False, elem_id="run-status", elem_classes="run-status",
                         scale=4)
        stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop-button", scale=0, min_width=100)
    report = gr.DownloadButton("Download report (.zip)", visible=False, elem_id="report-button",
                               variant="secondary")
    player = player_component(None, elem_id="player")  # the original while running, each roll as it comes
    comparison, summary, scores, agreement = _comparison()
    with gr.Row(equal_height=False, elem_id="cards"):
        cards = [_card(i) for i in range(n_cards)]
    return Page(status, stop, report, comparison, summary, scores, agreement, gr.State(PageState()), cards, player)


def _card(i: int) -> Card:
    """One model's card: its piano roll and audio are in the player (one transport for all)."""
    with gr.Column(visible=False, min_width=380, elem_classes="model-card", elem_id=f"card-{i}") as column:
        head = gr.HTML("", elem_classes="card-head", padding=False)
        stats = gr.HTML("", padding=False, elem_classes="card-stats")
        with gr.Row(equal_height=False):
            midi = gr.DownloadButton("Download MIDI", visible=False, size="md", elem_classes="midi-download",
                                     variant="secondary")
            stems = gr.DownloadButton("Download stems", visible=False, size="md", elem_classes="stems-download",
                                      variant="secondary")
        with gr.Accordion("Per-instrument breakdown", open=False, visible=False) as fold:
            breakdown = gr.HTML("", padding=False)
    return Card(column, head, stats, midi, stems, breakdown, fold)


def _comparison() -> tuple[Any, Any, Any, Any]:
    """The cross-model tabs: (tabs, summary table, scores, agreement). Short tab names, so that all
    three fit a phone's width (no "…" overflow menu)."""
    with gr.Tabs(visible=False, elem_id="comparison") as comparison:
        with gr.Tab("Summary", elem_id="tab-summary"):
            summary = gr.HTML("", padding=False, elem_id="summary-table")
        with gr.Tab("Scores", elem_id="tab-scores"):
            scores = gr.HTML("", padding=False)
        with gr.Tab("Agreement", elem_id="tab-agreement"):
            agreement = gr.HTML("", padding=False)
    return comparison, summary, scores, agreement


def _wire_runs(page: Page, inputs: dict[str, Any], manager: ModelManager, settings: Settings) -> None:
    """The page's Transcribe and Stop buttons and the plain API endpoint (hidden outputs of its own).

    Both runs are checked by a validator first: a bad upload is answered before it joins the queue.
    """
    adv = inputs["advanced"]

    def validate(audio, selected, reference, *decode):
        return (handlers.validate_inputs(manager, settings.max_seconds, audio, selected, reference,
                                         settings.upload_dir)
                + advanced.checks(manager, adv, decode))

    def validate_api(audio, selected, reference, options):
        return (handlers.validate_inputs(manager, settings.max_seconds, audio, selected, reference,
                                         settings.upload_dir)
                + [handlers.check_options(manager, options)])

    def transcribe_page(audio, selected, reference, *decode):
        yield from handlers.transcribe_page(page, manager, settings.max_seconds, audio, selected, reference,
                                            settings=settings, decode=adv.values(decode))

    def transcribe(audio, selected, reference, options, progress=gr.Progress()):
        """Transcribe one recording with the selected models.

        ``options`` (optional): each model's decode options as JSON, e.g.
        ``{"mt3": {"max_tokens": 64}, "yourmt3": {"batch_size": 2}}``.
        Returns the MIDI files, the piano-roll PNGs, the results (per model: notes, stats,
        timings, RTF, device, errors; scores and agreement when available) and the report zip.
        """
        yield from handlers.transcribe_api(manager, settings.max_seconds, audio, selected, reference, progress,
                                           settings=settings, options=options)

    run_inputs = [inputs["audio"], inputs["models"], inputs["reference"], *adv.components]
    queue = dict(concurrency_id="model", concurrency_limit=settings.concurrency, validator=validate)
    # Progress is drawn in each card (phase, segment i of n, time left), not over the status line.
    running = inputs["run"].click(on_gpu(transcribe_page, settings.zero_gpu), inputs=run_inputs,
                                  outputs=page.outputs(), api_visibility="private", show_progress="hidden",
                                  js=SHOW_RESULTS_JS, **queue)
    # Stop also shows what had finished: its player, tabs and report.
    page.stop.click(lambda state: handlers.stop_page(page, state), inputs=page.state,
                    outputs=page.summary_outputs(), cancels=[running], api_visibility="private", queue=False)
    api_outputs = [gr.File(file_count="multiple", visible=False, label="MIDI files"),
                   gr.File(file_count="multiple", visible=False, label="piano rolls"),
                   gr.JSON(visible=False, label="results"), gr.File(visible=False, label="report zip")]
    # The API names models by id, any id: the validator answers an unknown or unavailable one with
    # a sentence (the page's checkbox group would refuse it with a bare 400 instead).
    api_models = gr.Dropdown(choices=manager.model_ids(), value=None, multiselect=True, allow_custom_value=True,
                             visible=False, label="models")
    api_options = gr.Textbox(value="", visible=False, label="options")  # JSON, see ui.advanced
    gr.Button(visible=False).click(on_gpu(transcribe, settings.zero_gpu),
                                   inputs=[inputs["audio"], api_models, inputs["reference"], api_options],
                                   outputs=api_outputs, api_name="transcribe", **{**queue, "validator": validate_api})


def _wire_small_events(demo: gr.Blocks, page: Page, inputs: dict[str, Any], header: Any,
                       manager: ModelManager, settings: Settings) -> None:
    audio, reference, example = inputs["audio"], inputs["reference"], inputs["example"]
    rows = inputs["example_rows"]
    # An example brings its recording and its ground truth; the chosen one stays marked.
    example.input(lambda i: (rows[i][0], rows[i][1]) if i is not None else (gr.skip(), gr.skip()),
                  inputs=example, outputs=[audio, reference], api_visibility="private", queue=False)
    # A new recording is not the example any more: clear its mark and its ground truth.
    for event in (audio.upload, audio.stop_recording, audio.clear):
        event(lambda: (None, None), outputs=[reference, example], api_visibility="private", queue=False)
    # Every new recording is checked at once, and the result shown right under it.
    audio.change(lambda a: handlers.check_upload(a, settings.max_seconds, settings.upload_dir), inputs=audio,
                 outputs=inputs["upload_note"], api_visibility="private", queue=False, show_progress="hidden")
    # Availability can change while the app runs: refresh the choices and reasons on every page load.
    panels = inputs["advanced"].panels
    demo.load(lambda selected: handlers.refresh_page(manager, selected, list(panels)), inputs=inputs["models"],
              outputs=[inputs["models"], inputs["availability"], header, inputs["run"], page.status,
                       *panels.values()], api_visibility="private", queue=False)


# Gradio 6 hides "Use via API" on narrow screens but not the "·" after it (its rule names a
# .show-api-divider class the footer no longer has). css_paths are scoped to the app's container,
# which the footer is outside of, hence a <style> in the page head.
FOOTER_FIX = ("<style>@media (max-width: 640px) "
              "{ footer > div.divider:first-of-type { display: none; } }</style>")


def launch_kwargs() -> dict[str, Any]:
    """Arguments for ``demo.launch`` that Gradio 6 no longer takes in ``Blocks()`` (theme, CSS)."""
    return dict(
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="slate"),
        css_paths=[CSS_PATH],
        allowed_paths=[str(EXAMPLES_DIR)],
        max_file_size=MAX_UPLOAD,
        footer_links=["api", "settings"],
        head=FOOTER_FIX,
        ssr_mode=False,  # no Node server: one process, works offline
        app_kwargs=server_errors.app_kwargs(),  # Gradio's own refusals name no server folder
    )
