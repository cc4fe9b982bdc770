"""The Gradio Blocks page: where each component sits, and which handler each event calls.

Two ways in: the page (upload / record / click an example, tick models, press *Transcribe*; a card
per model fills in as that model finishes, then the cross-model tabs) and the API endpoint
``/transcribe`` (the same run, answered with MIDI files, piano-roll PNGs, results JSON and the
report zip). Room is left for more views per card or per run: add a module beside ``render`` and
a component group beside the cards.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from .. import runs
from ..manager import Availability, ModelManager, get_manager
from ..options import Settings, read_env
from . import handlers, render, server_errors
from .components import ALL_INSTRUMENTS, Card, Page
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

# Output players: the browser's own compact player (one line; scales to a phone) instead of a waveform.
PLAYER = gr.WaveformOptions(show_recording_waveform=False)


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
        composer = str(info.get("composer", "")).split(" (")[0]
        piece = str(info.get("piece", wav.stem)).split(" (")[0].split(",")[0]
        kind = KIND_LABEL.get(info.get("kind", ""), info.get("kind", ""))
        seconds = info.get("wav", {}).get("duration_s")
        rows.append([str(wav), str(mid) if mid.is_file() else None])
        labels.append(f"{kind} — {piece}, {composer}" + (f" ({seconds:.0f} s)" if seconds else ""))
    return rows, labels


def _settings() -> Settings:
    """The environment's settings; a bad variable is logged and its default used (the app starts)."""
    settings, problems = read_env()
    for problem in problems:
        log.warning("%s; using the default.", problem)
    return settings


def build_demo(manager: ModelManager | None = None, settings: Settings | None = None) -> gr.Blocks:
    """Build the Blocks app. Models load lazily on first use (eagerly when the host asks for it)."""
    settings = settings or _settings()
    manager = manager or get_manager(settings)
    if settings.eager:
        # ZeroGPU wants weights on the (emulated) GPU at import time, not inside the GPU call.
        for model_id, error in manager.preload().items():
            log.warning("preload %s failed: %s", model_id, error)
    with gr.Blocks(title="MT3 family — side-by-side transcription", delete_cache=(3600, runs.RUN_TTL_S)) as demo:
        avail = manager.availabilities()  # one snapshot for the first render; each page load refreshes it
        header = gr.HTML(render.header_html(manager, avail), padding=False, elem_id="page-header")
        inputs = _inputs(manager, settings, avail)
        original = gr.Audio(label="Original recording",
                            interactive=False, visible=False, elem_id="original-audio", waveform_options=PLAYER)
        player = player_component(None, elem_id="player", visible=False)  # filled when the run ends
        cards = _cards(max(1, len(manager.model_ids())))
        page = Page(inputs["status"], inputs["stop"], original, inputs["report"], *_comparison(),
                    gr.State(PageState()), cards, player)
        with gr.Accordion("About the models", open=False, elem_classes="phone-only"):
            gr.HTML(render.about_models_html(manager, avail), padding=False)
        _wire_runs(page, inputs, manager, settings)
        _wire_small_events(demo, page, inputs, header, manager, settings)
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    return demo


def _inputs(manager: ModelManager, settings: Settings, avail: dict[str, Availability]) -> dict[str, Any]:
    """Left: the recording, the model choice, Transcribe (on a phone, all on the first screen).
    Right: examples and the optional reference MIDI. ``avail``: the page's availability snapshot."""
    choices, value = render.model_choices(manager, avail)
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="audio-input",
                             label="Recording")  # short: on a phone a long label runs under its buttons
            upload_note = gr.HTML(handlers.check_upload(None, settings.max_seconds), padding=False,
                                  elem_id="upload-check")
            models = gr.CheckboxGroup(
                choices=choices, value=value, label="Models",
                elem_id="model-choice",
                info="Each selected model transcribes the same 16 kHz mono audio, one after another.")
            with gr.Row(elem_id="run-row"):
                run = gr.Button("Transcribe", variant="primary", elem_id="run-button", scale=3)
                stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop-button", scale=1)
            status = gr.Markdown("Pick an example or upload a recording, then press **Transcribe**.",
                                 elem_classes="run-status", elem_id="run-status")
            report = gr.DownloadButton("Download report (.zip)", visible=False, elem_id="report-button",
                                       variant="secondary")
            availability = gr.HTML(render.availability_html(manager, avail), padding=False, elem_id="availability")
        with gr.Column(scale=4, min_width=300):
            rows, labels = examples()
            example = gr.Radio(choices=[(label, i) for i, label in enumerate(labels)], value=None,
                               label="Examples (click one)", elem_id="examples")
            reference = gr.File(label="Reference MIDI (optional)",
                                file_types=[".mid", ".midi"], elem_id="reference-input")
    return dict(audio=audio, upload_note=upload_note, reference=reference, models=models,
                availability=availability, run=run, stop=stop, status=status, report=report,
                example=example, example_rows=rows)


def _card(i: int) -> Card:
    with gr.Column(visible=False, min_width=460, elem_classes="model-card", elem_id=f"card-{i}") as column:
        head = gr.HTML("", elem_classes="card-head", padding=False)
        roll = gr.Image(type="filepath", show_label=False, interactive=False, buttons=["download", "fullscreen"],
                        format="png", elem_classes="piano-roll", visible=False)
        instrument = gr.Dropdown(choices=[ALL_INSTRUMENTS], value=ALL_INSTRUMENTS, label="Piano roll: show",
                                 visible=False, interactive=True)
        stats = gr.HTML("", padding=False, elem_classes="card-stats")
        with gr.Row(equal_height=False):
            midi = gr.DownloadButton("Download MIDI", visible=False, size="md", elem_classes="midi-download",
                                     variant="secondary")
            stems = gr.DownloadButton("Download stems", visible=False, size="md", elem_classes="stems-download",
                                      variant="secondary")
        with gr.Row(equal_height=False):
            synth = gr.Audio(label="Transcription, synthesized", interactive=False, visible=False,
                             min_width=260, waveform_options=PLAYER)
            mix = gr.Audio(label="Original L + transcription R", interactive=False, visible=False,
                           min_width=260, waveform_options=PLAYER)
        with gr.Accordion("Per-instrument breakdown", open=False):
            breakdown = gr.HTML("", padding=False)
    return Card(column, head, roll, instrument, stats, midi, synth, mix, breakdown, stems)


def _cards(n: int) -> list[Card]:
    with gr.Row(equal_height=False, elem_id="cards"):
        return [_card(i) for i in range(n)]


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
    def validate(audio, selected, reference):
        return handlers.validate_inputs(manager, settings.max_seconds, audio, selected, reference)

    def transcribe_page(audio, selected, reference):
        yield from handlers.transcribe_page(page, manager, settings.max_seconds, audio, selected, reference)

    def transcribe(audio, selected, reference, progress=gr.Progress()):
        """Transcribe one recording with the selected models.

        Returns the MIDI files, the piano-roll PNGs, the results (per model: notes, stats,
        timings, RTF, device, errors; scores and agreement when available) and the report zip.
        """
        yield from handlers.transcribe_api(manager, settings.max_seconds, audio, selected, reference, progress)

    run_inputs = [inputs["audio"], inputs["models"], inputs["reference"]]
    queue = dict(concurrency_id="model", concurrency_limit=settings.concurrency, validator=validate)
    # Progress is drawn in each card (phase, segment i of n, time left), not over the status line.
    running = inputs["run"].click(on_gpu(transcribe_page), inputs=run_inputs, outputs=page.outputs(),
                                  api_visibility="private", show_progress="hidden", **queue)
    inputs["stop"].click(lambda state: handlers.stop_page(page, state), inputs=page.state,
                         outputs=[page.status, page.stop, *[c.head for c in page.cards]], cancels=[running],
                         api_visibility="private", queue=False)
    api_outputs = [gr.File(file_count="multiple", visible=False, label="MIDI files"),
                   gr.File(file_count="multiple", visible=False, label="piano rolls"),
                   gr.JSON(visible=False, label="results"), gr.File(visible=False, label="report zip")]
    # The API names models by id, any id: the validator answers an unknown or unavailable one with
    # a sentence (the page's checkbox group would refuse it with a bare 400 instead).
    api_models = gr.Dropdown(choices=manager.model_ids(), value=None, multiselect=True, allow_custom_value=True,
                             visible=False, label="models")
    gr.Button(visible=False).click(on_gpu(transcribe), inputs=[inputs["audio"], api_models, inputs["reference"]],
                                   outputs=api_outputs, api_name="transcribe", **queue)


def _wire_small_events(demo: gr.Blocks, page: Page, inputs: dict[str, Any], header: Any,
                       manager: ModelManager, settings: Settings) -> None:
    for i, card in enumerate(page.cards):
        card.instrument.input(handlers.show_instrument, inputs=[gr.State(i), card.instrument, page.state],
                              outputs=card.roll, api_visibility="private", show_progress="minimal")
    audio, reference, example = inputs["audio"], inputs["reference"], inputs["example"]
    rows = inputs["example_rows"]
    # An example brings its recording and its ground truth; the chosen one stays marked.
    example.input(lambda i: (rows[i][0], rows[i][1]) if i is not None else (gr.skip(), gr.skip()),
                  inputs=example, outputs=[audio, reference], api_visibility="private", queue=False)
    # A new recording is not the example any more: clear its mark and its ground truth.
    for event in (audio.upload, audio.stop_recording, audio.clear):
        event(lambda: (None, None), outputs=[reference, example], api_visibility="private", queue=False)
    # Every new recording is checked at once, and the result shown right under it.
    audio.change(lambda a: handlers.check_upload(a, settings.max_seconds), inputs=audio,
                 outputs=inputs["upload_note"], api_visibility="private", queue=False, show_progress="hidden")
    # Availability can change while the app runs: refresh the choices and reasons on every page load.
    demo.load(lambda selected: handlers.refresh_models(manager, selected), inputs=inputs["models"],
              outputs=[inputs["models"], inputs["availability"], header], api_visibility="private", queue=False)


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
