"""One request of the app, shared by the page and the API endpoint (no Gradio here).

Checks the inputs, gives the request its own folder (:mod:`mt3_demo.runs`: bounded, pruned),
runs :mod:`mt3_demo.pipeline` and reports each model as it finishes. What the page keeps between
events (for Stop) is a :class:`PageState`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

from .. import pipeline, reference as reference_midi, runs, writers
from ..audio import AudioError, Clip, load_clip
from ..manager import ModelManager, UnknownModel
from ..notes import Note
from ..options import OptionError, Settings
from ..results import ModelResult, Run


class InputError(ValueError):
    """Something the user can fix on the page (nothing selected, unreadable reference MIDI)."""


# Errors shown to people verbatim, in a warning and the status line (never a stack trace).
USER_ERRORS = (AudioError, InputError)


@dataclass
class PageState:
    """What the page keeps between events of one session: this run's request and its results per
    card (Stop makes the report and the comparison of the models that had finished from them)."""

    duration: float = 0.0
    results: dict[int, ModelResult] = field(default_factory=dict)  # card index -> finished result
    names: list[str] = field(default_factory=list)  # card index -> model name, for this run
    request: Request | None = None
    audio: str | None = None  # the recording's path (the player's "original" source)


def load_reference(reference: str | None) -> tuple[list[Note] | None, str | None]:
    """The reference's notes and file name (None, None without one); every bound of
    :mod:`mt3_demo.reference` checked, in well under a second whatever the file holds."""
    if not reference:
        return None, None
    try:
        return reference_midi.read_reference(reference), Path(reference).name
    except reference_midi.ReferenceError as e:
        raise InputError(str(e)) from None


def check_selection(manager: ModelManager, model_ids: list[str]) -> list[str]:
    """Known models that can run here (the page offers no others; the API may ask for any)."""
    if not model_ids:
        raise InputError("Select at least one model.")
    try:
        for m in model_ids:
            manager.spec(m)
    except UnknownModel as e:
        raise InputError(str(e)) from None
    for m in model_ids:
        avail = manager.availability(m)
        if not avail.usable:
            raise InputError(f"{manager.spec(m).display_name} cannot run here: {avail.reason}")
    return model_ids


@dataclass
class Request:
    """One request's inputs and folder. Use it as a context manager around the run: its folder is
    never pruned before the run ends (finished, failed or abandoned)."""

    clip: Clip
    model_ids: list[str]
    out_dir: Path
    reference: list[Note] | None
    reference_name: str | None
    decode: dict[str, Any] = field(default_factory=dict)  # model id -> its decode options

    def __enter__(self) -> Request:
        return self

    def __exit__(self, *exc: Any) -> None:
        runs.release(self.out_dir)


def start(audio: str | None, model_ids: list[str], reference: str | None, manager: ModelManager,
          max_seconds: float, settings: Settings | None = None,
          decode: dict[str, Any] | None = None) -> Request:
    """Check everything the user gave (raises one of ``USER_ERRORS``) and open the request's folder.

    An upload that is rejected is deleted now rather than hours later by Gradio's cache. The run
    folders follow ``settings`` (``upload_dir``, ``runs_max_mb``: the app's; default the manager's).
    ``decode``: each model's decode options (``<Model>Decode``, or a mapping of option names to
    values from the page's "Advanced" sections), checked here by the options' own rules.
    """
    model_ids = check_selection(manager, model_ids)
    try:
        decode = {m: manager.decode_for(m, v) for m, v in (decode or {}).items()}
    except OptionError as e:
        raise InputError(str(e)) from None
    settings = settings or manager.settings
    upload_dir = settings.upload_dir
    try:
        ref_notes, ref_name = load_reference(reference)
    except InputError:
        runs.discard_upload(reference, upload_dir)
        raise
    try:
        clip = load_clip(audio, limit_seconds=max_seconds)
    except AudioError:
        runs.discard_upload(audio, upload_dir)
        raise
    if ref_notes is not None:  # a reference longer than the recording is trimmed to it
        try:
            ref_notes, warning = reference_midi.fit(ref_notes, clip.duration, ref_name)
        except reference_midi.ReferenceError as e:
            runs.discard_upload(reference, upload_dir)
            raise InputError(str(e)) from None
        if warning:
            clip.warnings.append(warning)
    return Request(clip, model_ids, runs.new_run_dir(settings), ref_notes, ref_name, decode)


ProgressFn = Callable[[int, float, str], None]  # (index of the model in the request, its fraction, phase)


def results(request: Request, manager: ModelManager, progress: ProgressFn | None = None,
            listening: Collection[str] = writers.PAGE_LISTENING) -> Iterator[ModelResult]:
    """Each model's result as it finishes (files written), in the order of ``request.model_ids``.
    ``listening``: the WAVs to write (by default the two the page's card plays)."""
    for done, model_id in enumerate(request.model_ids):
        def on_progress(_id: str, frac: float, desc: str, done: int = done) -> None:
            if progress is not None:
                progress(done, min(max(frac, 0.0), 1.0), desc)

        yield pipeline.transcribe_one(request.clip, model_id, manager, request.out_dir, on_progress, listening,
                                      request.decode.get(model_id))


def finish(request: Request, model_results: list[ModelResult]) -> Run:
    """Scores, agreement and the report files of a finished request."""
    run = pipeline.finish(model_results, request.clip, request.reference, request.reference_name)
    writers.write_run(run, request.out_dir)
    return run


def run_for_api(request: Request, manager: ModelManager, progress: ProgressFn | None = None) -> Run:
    """The whole request for the API, which returns no audio: no WAV is written."""
    return finish(request, list(results(request, manager, progress, listening=())))


def finish_stopped(state: PageState) -> Run | None:
    """The report of a stopped run: the models that had finished, scored and compared as at the
    end of a whole run. None when none had finished or the run's folder is gone (pruned)."""
    finished = [state.results[i] for i in sorted(state.results)]
    if state.request is None or not any(r.ok for r in finished) or not state.request.out_dir.is_dir():
        return None
    return finish(state.request, finished)


def api_payload(run: Run) -> tuple[list[str], list[str], dict[str, Any], str]:
    """The API's answer: MIDI files, piano-roll PNGs, results.json as a dict, the report zip."""
    ok = run.ok_results
    if not ok:
        raise InputError("No model could transcribe this recording: " + " | ".join(
            f"{r.display_name}: {r.error}" for r in run.results))
    return ([str(r.files["midi"]) for r in ok], [str(r.files["png"]) for r in ok], writers.run_json(run),
            str(run.files["zip"]))
