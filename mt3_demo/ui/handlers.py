"""What the page's events do: a run fills one card per model as it finishes, then the comparison.

Handlers turn a request (``session``) into component updates; the HTML comes from ``render``.
Nothing is computed here that a ``Run`` or a ``ModelResult`` already holds.

The models run in a worker thread; the page's generator relays its progress (phase, segment i of
n, time left) into the running card about once a second. When the generator is closed — Stop was
pressed, or the client went away — the worker stops at its next segment, so the queue moves on.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Collection, Iterator

import gradio as gr

from .. import pipeline, runs, writers
from ..audio import AudioError, check_file
from ..manager import ModelManager
from ..options import OptionError, Settings
from ..results import ModelResult, Run
from . import advanced, leakage_view, render, session
from .components import Card, Page
from .player import results_payload, run_payload

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often a running page hears from the worker (and can be stopped)


def validate_inputs(manager: ModelManager, max_seconds: float, audio: str | None, selected: Any,
                    reference: str | None, upload_dir: Path | None = None) -> list:
    """Gradio's validator: runs before a request joins the queue (milliseconds, not a wait behind
    other people's transcriptions). One ``gr.validate`` per input, the message at the input.
    An upload refused here is deleted now (:func:`mt3_demo.runs.discard_upload`), not hours later
    by Gradio's cache; a file that passed stays, so a request refused for another input can be
    sent again as it is. ``upload_dir``: Gradio's folder (``Settings.upload_dir``)."""
    checks = []
    try:
        check_file(audio, max_seconds)
        checks.append(gr.validate(True, ""))
    except AudioError as e:
        runs.discard_upload(audio, upload_dir)
        checks.append(gr.validate(False, str(e)))
    selected = [selected] if isinstance(selected, str) else list(selected or [])
    try:
        session.check_selection(manager, selected)
        checks.append(gr.validate(True, ""))
    except session.InputError as e:
        checks.append(gr.validate(False, str(e)))
    try:
        session.load_reference(reference)
        checks.append(gr.validate(True, ""))
    except session.InputError as e:
        runs.discard_upload(reference, upload_dir)
        checks.append(gr.validate(False, str(e)))
    return checks


def check_options(manager: ModelManager, options: str | None) -> dict:
    """The API's ``options`` JSON for Gradio's validator: every model id, option and value checked."""
    try:
        advanced.from_json(manager, options)
        return gr.validate(True, "")
    except OptionError as e:
        return gr.validate(False, str(e))


def check_upload(audio: str | None, max_seconds: float, upload_dir: Path | None = None) -> str:
    """The note under the recording, as soon as it is uploaded: what it is, or what is wrong
    (before any upload: what it may be). A refused upload is deleted at once."""
    if not audio:
        return render.upload_hint(max_seconds)
    try:
        return render.upload_note(True, check_file(audio, max_seconds))
    except AudioError as e:
        runs.discard_upload(audio, upload_dir)
        return render.upload_note(False, str(e))


def transcribe_page(page: Page, manager: ModelManager, max_seconds: float, audio: str | None,
                    selected: list[str] | None, reference: str | None,
                    settings: Settings | None = None, decode: dict[str, Any] | None = None) -> Iterator[dict]:
    """The page's run: reset the cards, then progress and one update per finished model, then the
    summary. ``settings``: the app's (run folders; default the manager's); ``decode``: each
    model's decode options (the "Advanced" sections, ``ui.advanced``)."""
    try:
        request = session.start(audio, list(selected or []), reference, manager, max_seconds, settings, decode)
    except session.USER_ERRORS as e:
        yield {page.status: render.status_html("error", "Could not transcribe:", str(e)),
               page.stop: gr.update(visible=False)}
        return
    with request:  # its folder is kept until the run ends, even if the page goes away
        yield from _fill_page(page, manager, request, audio)


def _fill_page(page: Page, manager: ModelManager, request: session.Request, audio: str | None) -> Iterator[dict]:
    """The updates of an accepted request, from the first (cards reset) to the summary. The status
    line at the top of the results says the current model's phase; the player gains each model's
    roll as it finishes."""
    names = [manager.spec(m).display_name for m in request.model_ids]
    state = session.PageState(duration=request.clip.duration, names=names, request=request, audio=audio)
    warnings = list(request.clip.warnings)
    yield _first_update(page, request, names, audio, warnings, state)

    def status(index: int, fraction: float, phase: str) -> str:
        return render.running_status(request.clip.duration, names, index, fraction, phase, warnings)

    finished: list[ModelResult] = []
    with contextlib.closing(relay(request, manager)) as events:  # closed with this generator
        for kind, index, payload in events:
            if kind == "tick":
                yield {page.state: gr.skip()}  # Gradio may close this generator here (Stop, client gone)
            elif kind == "progress":
                update = {page.cards[i].head: render.card_head(names[i], "running", progress=p)
                          for i, p in payload.items()}
                i, (fraction, phase) = max(payload.items())
                update[page.status] = status(i, fraction, phase)
                yield update
            elif kind == "result":
                finished.append(payload)
                state.results[index] = payload
                update = card_update(page.cards[index], payload)
                if index + 1 < len(names):
                    update[page.cards[index + 1].head] = render.card_head(names[index + 1], "running")
                    update[page.status] = status(index + 1, 0.0, "starting")
                if payload.ok:
                    update[page.player] = results_payload(page.player, finished, request.clip.duration, audio,
                                                          request.reference, request.reference_name)
                update[page.state] = state
                yield update
            elif kind == "crashed":
                yield {page.status: render.status_html("error", "The run stopped:", payload),
                       page.stop: gr.update(visible=False)}
                return
    run = session.finish(request, finished)
    update = summary_update(page, run, warnings)
    update[page.player] = run_payload(page.player, run, audio)
    yield update


def relay(request: session.Request, manager: ModelManager,
          listening: Collection[str] = writers.PAGE_LISTENING) -> Iterator[tuple[str, Any, Any]]:
    """Run the request's models in a worker thread and pass on what it reports:
    ("progress", None, {model index: (fraction, phase)}) with only the newest phase per model,
    ("result", model index, ModelResult), ("crashed", None, message), and ("tick", None, None) when
    nothing happened for ``POLL_S``. Ends after the last result. When this generator is closed early
    (Stop, a client gone), the worker raises ``Cancelled`` at its next progress report."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    threading.Thread(target=_work, args=(request, manager, events, stop, listening), name="mt3-demo-run",
                     daemon=True).start()
    try:
        while True:
            try:
                kind, index, payload = events.get(timeout=POLL_S)
            except queue.Empty:
                yield "tick", None, None
                continue
            if kind == "progress":
                latest = {index: payload}
                while not events.empty() and events.queue[0][0] == "progress":  # keep only the newest
                    _, i, p = events.get_nowait()
                    latest[i] = p
                yield "progress", None, latest
            elif kind == "finished":
                return
            else:
                yield kind, index, payload
                if kind == "crashed":
                    return
    finally:
        stop.set()


def _work(request: session.Request, manager: ModelManager, events: queue.Queue, stop: threading.Event,
          listening: Collection[str]) -> None:
    """The models, one after another, off the server's event loop; everything goes to ``events``."""
    def on_progress(index: int, fraction: float, desc: str) -> None:
        if stop.is_set():
            raise pipeline.Cancelled
        events.put(("progress", index, (fraction, desc)))

    try:
        for i, result in enumerate(session.results(request, manager, on_progress, listening)):
            events.put(("result", i, result))
            if stop.is_set():
                return
        events.put(("finished", None, None))
    except pipeline.Cancelled:
        log.info("run stopped: %s", request.out_dir.name)
    except Exception as e:  # noqa: BLE001 - reported on the page, logged in full here
        log.exception("run failed")
        events.put(("crashed", None, f"{type(e).__name__}: {e}"))


def stop_page(page: Page, state: session.PageState | None) -> dict:
    """Stop pressed: the run's event is cancelled (``cancels=``); the unfinished cards say so, and
    the models that had finished are compared, played and reported as at the end of a whole run."""
    update: dict[Any, Any] = {page.stop: gr.update(visible=False)}
    unfinished = []
    if state is not None:
        for i, name in enumerate(state.names):
            if i not in state.results and i < len(page.cards):
                update[page.cards[i].head] = render.card_head(name, "stopped")
                unfinished.append(name)
    try:
        run = session.finish_stopped(state) if state is not None else None
    except OSError:  # the run's folder went (pruned) while it was stopped: no report to offer
        log.exception("the stopped run's report could not be written")
        run = None
    if run is not None:
        update.update(summary_update(page, run, []))
        update[page.player] = run_payload(page.player, run, state.audio)
    update[page.status] = render.stopped_status(run, unfinished)
    return update


def _first_update(page: Page, request: session.Request, names: list[str], audio: str | None,
                  warnings: list[str], state: session.PageState) -> dict:
    update: dict[Any, Any] = {
        page.status: render.running_status(request.clip.duration, names, 0, 0.0, "starting", warnings),
        page.stop: gr.update(visible=True),
        page.report: gr.update(value=None, visible=False),
        page.comparison: gr.update(visible=False),
        # The original alone until the first model is done: it can be heard while the models run.
        page.player: results_payload(page.player, [], request.clip.duration, audio),
        page.state: state,
    }
    for i, card in enumerate(page.cards):
        update[card.column] = gr.update(visible=i < len(names))
        if i < len(names):
            update[card.head] = render.card_head(names[i], "running" if i == 0 else "queued")
            for comp in (card.midi, card.stems):
                update[comp] = gr.update(visible=False, value=None)
            update[card.stats] = ""
            update[card.breakdown] = ""
            update[card.fold] = gr.update(visible=False)
    return update


def card_update(card: Card, result: ModelResult) -> dict:
    """A finished model's card; a failure is said here, once, in one sentence (details folded). A
    model that wrote no notes says so and offers no (empty) MIDI or stems."""
    if not result.ok:
        return {card.head: render.card_head(result.display_name, "error", result.error or "failed")}
    t, files = result.transcription, result.files
    return {
        card.head: render.card_head(result.display_name, "done", render.done_detail(result), weights=t.weights),
        card.stats: render.stats_html(result),
        card.midi: gr.update(value=str(files["midi"]) if t.notes else None, visible=bool(t.notes)),
        card.stems: gr.update(value=str(files["stems"]) if "stems" in files else None, visible="stems" in files),
        card.breakdown: render.breakdown_html(t.notes),
        card.fold: gr.update(visible=bool(t.notes)),
    }


def summary_update(page: Page, run: Run, warnings: list[str]) -> dict:
    """The status line and the cross-model tabs; the report is offered only when something ran."""
    ok = bool(run.ok_results)
    return {
        page.status: render.done_status(run, warnings),
        page.stop: gr.update(visible=False),
        page.report: gr.update(value=str(run.files["zip"]) if ok else None, visible=ok),
        page.comparison: gr.update(visible=ok),
        page.summary: render.summary_html(run),
        page.scores: render.scores_html(run) + leakage_view.leakage_html(run),
        page.agreement: render.agreement_html(run),
    }


def transcribe_api(manager: ModelManager, max_seconds: float, audio: str | None, selected: Any,
                   reference: str | None, progress: gr.Progress | None = None,
                   settings: Settings | None = None, options: str | None = None) -> Iterator[tuple]:
    """The ``/transcribe`` endpoint: the same run, answered with files and the results JSON (the
    last value yielded; the ones before change nothing and let a vanished client's run be closed).
    ``options``: decode options per model as JSON, ``{"mt3": {"max_tokens": 64}}`` (``ui.advanced``)."""
    selected = [selected] if isinstance(selected, str) else list(selected or [])
    try:
        decode = advanced.from_json(manager, options)
        request = session.start(audio, selected, reference, manager, max_seconds, settings, decode)
    except (*session.USER_ERRORS, OptionError) as e:
        raise gr.Error(str(e), print_exception=False) from None
    with request:  # its folder is kept until the run ends
        n = len(request.model_ids)
        finished: list[ModelResult] = []
        # The API returns no audio: no WAV is written.
        with contextlib.closing(relay(request, manager, listening=())) as events:  # closed with this generator
            for kind, index, payload in events:
                if kind == "progress" and progress is not None:
                    i, (fraction, desc) = max(payload.items())
                    progress((i + fraction) / n, desc=f"{manager.spec(request.model_ids[i]).display_name}: {desc}")
                elif kind == "result":
                    finished.append(payload)
                elif kind == "crashed":
                    raise gr.Error(f"The run stopped: {payload}", print_exception=False)
                yield (gr.skip(),) * 4
        run = session.finish(request, finished)
    try:
        yield session.api_payload(run)
    except session.USER_ERRORS as e:
        raise gr.Error(str(e), print_exception=False) from None


def refresh_page(manager: ModelManager, selected: list[str] | None, panels: list[str]):
    """Availability can change while the app runs (a checkpoint downloaded, a folder filled, a Ray
    cluster up or down): everything a page load refreshes from one snapshot. Only models that can run
    here are offered, the others listed with why; then the header, Transcribe (off when nothing can
    run), the idle status (says why nothing can run) and each model's Advanced panel (``panels``:
    their model ids)."""
    avail = manager.availabilities()  # once per page load: each model's weights resolved once
    choices, value = render.model_choices(manager, avail, selected)
    return (gr.update(choices=choices, value=value), render.availability_html(manager, avail),
            render.header_html(manager, avail), gr.update(**render.run_button(manager, avail)),
            render.idle_status(manager, avail), *[gr.update(visible=avail[m].usable) for m in panels])

