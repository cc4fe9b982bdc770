"""One request of the app, shared by the page and the API endpoint (no Gradio here).

Checks the inputs, gives the request its own folder, runs :mod:`mt3_demo.pipeline` and reports
each model as it finishes. What the page keeps between events (for the instrument view) is a
:class:`PageState`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import pipeline, writers
from ..audio import AudioError, Clip, load_clip
from ..manager import ModelManager, UnknownModel
from ..notes import Note, notes_from_midi
from ..results import ModelResult, Run

RUN_TTL_S = 6 * 3600  # per-request output folders older than this are removed on the next run


class InputError(ValueError):
    """Something the user can fix on the page (nothing selected, unreadable reference MIDI)."""


# Errors shown to people verbatim, in a warning and the status line (never a stack trace).
USER_ERRORS = (AudioError, InputError)


@dataclass
class PageState:
    """What the page keeps between events of one session: this run's results, per card."""

    duration: float = 0.0
    results: dict[int, ModelResult] = field(default_factory=dict)  # card index -> finished result


def runs_root() -> Path:
    """Per-request folders live under Gradio's temp dir (or the system's): both are served paths."""
    base = os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()
    root = Path(base) / "mt3-demo-runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def new_run_dir() -> Path:
    """A fresh folder per request, so two users' files never collide; old ones are pruned."""
    root = runs_root()
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > RUN_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root))


def load_reference(reference: str | None) -> tuple[list[Note] | None, str | None]:
    if not reference:
        return None, None
    try:
        return notes_from_midi(reference), Path(reference).name
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise InputError(f"The reference MIDI '{Path(reference).name}' could not be read ({e}). "
                         "Upload a standard .mid file or leave the reference empty.") from e


def check_selection(manager: ModelManager, model_ids: list[str]) -> list[str]:
    if not model_ids:
        raise InputError("Select at least one model.")
    try:
        for m in model_ids:
            manager.spec(m)
    except UnknownModel as e:
        raise InputError(str(e)) from None
    return model_ids


@dataclass
class Request:
    clip: Clip
    model_ids: list[str]
    out_dir: Path
    reference: list[Note] | None
    reference_name: str | None


def start(audio: str | None, model_ids: list[str], reference: str | None, manager: ModelManager,
          max_seconds: float) -> Request:
    """Check everything the user gave (raises one of ``USER_ERRORS``) and open the request's folder."""
    model_ids = check_selection(manager, model_ids)
    ref_notes, ref_name = load_reference(reference)
    clip = load_clip(audio, limit_seconds=max_seconds)
    return Request(clip, model_ids, new_run_dir(), ref_notes, ref_name)


ProgressFn = Callable[[float, str], None]  # (fraction of the whole request, description)


def results(request: Request, manager: ModelManager, progress: ProgressFn | None = None) -> Iterator[ModelResult]:
    """Each model's result as it finishes (files written), in the order of ``request.model_ids``."""
    n = len(request.model_ids)
    for done, model_id in enumerate(request.model_ids):
        def on_progress(_id: str, frac: float, desc: str, done: int = done) -> None:
            if progress is not None:
                progress((done + min(max(frac, 0.0), 1.0)) / n, desc)

        yield pipeline.transcribe_one(request.clip, model_id, manager, request.out_dir, on_progress)


def finish(request: Request, model_results: list[ModelResult]) -> Run:
    """Scores, agreement and the report files of a finished request."""
    run = pipeline.finish(model_results, request.clip, request.reference, request.reference_name)
    writers.write_run(run, request.out_dir)
    return run


def run_all(request: Request, manager: ModelManager, progress: ProgressFn | None = None) -> Run:
    return finish(request, list(results(request, manager, progress)))


def instrument_png(state: PageState, index: int, choice: str | None, all_label: str) -> str | None:
    """The card's piano roll, or one drawn for one instrument only (same time axis), or None."""
    result = state.results.get(index)
    if result is None or not result.ok:
        return None
    png = result.files["png"]
    if not choice or choice == all_label:
        return str(png)
    path = png.with_name(f"{png.stem}__only_{writers.safe_name(choice)}.png")
    if not path.exists():
        writers.write_png(result.transcription.notes, state.duration, path, result.display_name,
                          only_instrument=choice)
    return str(path)


def api_payload(run: Run) -> tuple[list[str], list[str], dict[str, Any], str]:
    """The API's answer: MIDI files, piano-roll PNGs, results.json as a dict, the report zip."""
    ok = run.ok_results
    if not ok:
        raise InputError("No model could transcribe this recording: " + " | ".join(
            f"{r.display_name}: {r.error}" for r in run.results))
    return ([str(r.files["midi"]) for r in ok], [str(r.files["png"]) for r in ok], writers.run_json(run),
            str(run.files["zip"]))
