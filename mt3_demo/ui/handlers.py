"""What the page's events do: a run fills one card per model as it finishes, then the comparison.

Handlers turn a request (``session``) into component updates; the HTML comes from ``render``.
Nothing is computed here that a ``Run`` or a ``ModelResult`` already holds.
"""
from __future__ import annotations

from typing import Any, Iterator

import gradio as gr

from .. import pianoroll, writers
from ..manager import ModelManager
from ..results import ModelResult, Run
from . import leakage_view, render, session
from .components import ALL_INSTRUMENTS, Card, Page
from .player import run_payload


def transcribe_page(page: Page, manager: ModelManager, max_seconds: float, audio: str | None,
                    selected: list[str] | None, reference: str | None,
                    progress: gr.Progress | None = None) -> Iterator[dict]:
    """The page's run: reset the cards, then one update per finished model, then the summary."""
    try:
        request = session.start(audio, list(selected or []), reference, manager, max_seconds)
    except session.USER_ERRORS as e:
        gr.Warning(str(e))
        yield {page.status: f"**Could not transcribe:** {e}"}
        return
    with request:  # its folder is kept until the run ends, even if the page goes away
        yield from _fill_page(page, manager, request, audio, progress)


def _fill_page(page: Page, manager: ModelManager, request: session.Request, audio: str | None,
               progress: gr.Progress | None) -> Iterator[dict]:
    """The updates of an accepted request, from the first (cards reset) to the summary."""
    names = [manager.spec(m).display_name for m in request.model_ids]
    state = session.PageState(duration=request.clip.duration)
    warnings = "".join(f"\n\n**Note:** {w}" for w in request.clip.warnings)
    for w in request.clip.warnings:
        gr.Warning(w)
    yield _first_update(page, request, names, audio, warnings, state)

    def on_progress(fraction: float, desc: str) -> None:
        if progress is not None:
            progress(fraction, desc=desc)

    finished = []
    for i, result in enumerate(session.results(request, manager, on_progress)):
        finished.append(result)
        state.results[i] = result
        update = card_update(page.cards[i], result)
        if i + 1 < len(names):
            update[page.cards[i + 1].head] = render.card_head(names[i + 1], "running")
        if not result.ok:
            gr.Warning(result.error)
        update[page.state] = state
        yield update
    if progress is not None:
        progress(1.0, desc="Scoring and writing the report…")
    run = session.finish(request, finished)
    update = summary_update(page, run, warnings)
    update[page.player] = gr.update(visible=True, value=run_payload(page.player, run, audio))
    yield update


def _first_update(page: Page, request: session.Request, names: list[str], audio: str | None,
                  warnings: str, state: session.PageState) -> dict:
    n = len(names)
    update: dict[Any, Any] = {
        page.status: f"Transcribing {request.clip.duration:.1f} s of audio with {n} "
                     f"model{'s' if n > 1 else ''}…{warnings}",
        page.original: gr.update(value=str(audio), visible=True),
        page.report: gr.update(value=None, visible=False),
        page.comparison: gr.update(visible=False),
        page.player: gr.update(value=None, visible=False),
        page.state: state,
    }
    for i, card in enumerate(page.cards):
        update[card.column] = gr.update(visible=i < n)
        if i < n:
            update[card.head] = render.card_head(names[i], "running" if i == 0 else "queued")
            for comp in (card.roll, card.midi, card.stems, card.synth, card.mix):
                update[comp] = gr.update(visible=False, value=None)
            update[card.instrument] = gr.update(visible=False, choices=[ALL_INSTRUMENTS], value=ALL_INSTRUMENTS)
            update[card.stats] = ""
            update[card.breakdown] = ""
    return update


def synth_label(method: str | None) -> str:
    """Say honestly which synthesizer made the sound (the fallback cannot sound like FluidSynth)."""
    method = method or ""
    if method.startswith("fluidsynth"):
        return "Transcription (FluidSynth)"
    return f"Transcription — {method}" if method else "Transcription, synthesized"


def card_update(card: Card, result: ModelResult) -> dict:
    if not result.ok:
        return {card.head: render.card_head(result.display_name, "error", result.error or "failed")}
    t, files = result.transcription, result.files
    instruments = pianoroll.instruments_in(t.notes)
    return {
        card.head: render.card_head(result.display_name, "done",
                                    f"{t.stats['total']} notes · RTF {t.rtf:.2f} on {t.device}"),
        card.roll: gr.update(value=str(files["png"]), visible=True),
        card.instrument: gr.update(choices=[ALL_INSTRUMENTS] + instruments, value=ALL_INSTRUMENTS,
                                   visible=len(instruments) > 1),
        card.stats: render.stats_html(result),
        card.midi: gr.update(value=str(files["midi"]), visible=True),
        card.stems: gr.update(value=str(files["stems"]) if "stems" in files else None, visible="stems" in files),
        card.synth: gr.update(value=str(files["audio_matched"]) if "audio_matched" in files else None,
                              label=synth_label(result.synth_method), visible="audio_matched" in files),
        card.mix: gr.update(value=str(files["mix"]) if "mix" in files else None, visible="mix" in files),
        card.breakdown: render.breakdown_html(t.notes),
    }


def summary_update(page: Page, run: Run, warnings: str) -> dict:
    return {
        page.status: render.done_message(run) + warnings,
        page.report: gr.update(value=str(run.files["zip"]), visible=True),
        page.comparison: gr.update(visible=True),
        page.summary: [[writers.summary_row(r).get(k, "") for k, _ in writers.SUMMARY_COLUMNS]
                       for r in run.results],
        page.scores: render.scores_html(run) + leakage_view.leakage_html(run),
        page.agreement: render.agreement_html(run),
    }


def transcribe_api(manager: ModelManager, max_seconds: float, audio: str | None, selected: Any,
                   reference: str | None, progress: gr.Progress | None = None):
    """The ``/transcribe`` endpoint: the same run, answered with files and the results JSON."""
    selected = [selected] if isinstance(selected, str) else list(selected or [])
    try:
        on_progress = (lambda f, d: progress(f, desc=d)) if progress else None
        with session.start(audio, selected, reference, manager, max_seconds) as request:
            run = session.run_for_api(request, manager, on_progress)
        return session.api_payload(run)
    except session.USER_ERRORS as e:
        raise gr.Error(str(e), print_exception=False) from None


def show_instrument(index: int, choice: str, state: session.PageState | None):
    """Re-draw one card's piano roll restricted to one instrument (same time axis)."""
    path = session.instrument_png(state, index, choice, ALL_INSTRUMENTS) if state else None
    return gr.skip() if path is None else path


def refresh_models(manager: ModelManager):
    """Availability can change while the app runs (a checkpoint downloaded, a folder filled)."""
    choices = [(render.choice_label(manager, m), m) for m in manager.model_ids()]
    return gr.update(choices=choices), render.availability_html(manager), render.header_html(manager)
