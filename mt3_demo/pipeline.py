"""One run, the same for CLI ``transcribe``, CLI ``compare`` and the UI.

    Clip ──► per model: manager.check, manager.transcribe(decode) ─► Transcription (notes, timings)
         │              writers.write_model_files ─► MIDI, PNG, WAVs          = ModelResult
         └─► finish: scores against the reference, agreement between models   = Run
                     writers.write_run ─► results.json, summary.md, agreement.png, zip

:func:`transcribe_each` yields each :class:`ModelResult` as soon as its model is done (the UI fills
a card per model); :func:`finish` turns them into a :class:`~mt3_demo.results.Run`;
:func:`run_models` does both and writes the run's files. Nothing downstream recomputes what a
``Run`` holds.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping

import torch

from . import leakage, metrics, writers
from .audio import AudioError, Clip
from .checkpoints import CheckpointError
from .manager import BackendError, ModelManager
from .notes import Note
from .options import OptionError
from .results import ModelResult, Run

log = logging.getLogger(__name__)

# on_progress(model_id, fraction 0..1, description of the phase, e.g. "decoding segment 3 of 10 · ~12 s left")
ProgressCallback = Callable[[str, float, str], None]


class Cancelled(Exception):
    """Raised from a progress callback to stop a run (the person pressed Stop or left); it passes
    through :func:`transcribe_one` instead of becoming the model's error."""


class PhaseReporter:
    """Turns the manager's and the adapter's callbacks into phases with an estimate of time left.

    loading weights → computing features, decoding segment 1 of n → decoding segment i of n
    (~s left, from the pace of the segments so far) → writing MIDI, piano roll and audio.
    """

    def __init__(self, model_id: str, clip: Clip, on_progress: ProgressCallback | None) -> None:
        self.model_id, self.clip, self.on_progress = model_id, clip, on_progress
        self.started = 0.0

    def report(self, fraction: float, desc: str) -> None:
        if self.on_progress is not None:
            self.on_progress(self.model_id, fraction, desc)

    def waiting(self, phrase: str) -> None:
        """The request waits for its turn in the backend's queue (a Ray Serve replica)."""
        self.report(0.0, phrase)

    def loaded(self, transcriber: Any, decode: Any = None) -> None:
        self.started = time.perf_counter()
        total = transcriber.num_segments(self.clip, decode)
        self.report(0.0, f"computing features, decoding segment 1 of {total}")

    def segments(self, done: int, total: int) -> None:
        if not total:
            return
        if done >= total:
            self.report(1.0, "writing MIDI, piano roll and audio")
            return
        phase = f"decoding segment {done + 1} of {total}"
        if done:  # the pace of the segments so far; none yet: no estimate
            left = (time.perf_counter() - self.started) / done * (total - done)
            phase += f" · ~{_seconds(left)} left"
        self.report(done / total, phase)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def transcribe_one(clip: Clip, model_id: str, manager: ModelManager, out_dir: Path | None,
                   on_progress: ProgressCallback | None = None,
                   listening: Collection[str] = writers.LISTENING, decode: Any = None) -> ModelResult:
    """Transcribe with one model (``decode``: its decode options, see
    :meth:`~mt3_demo.manager.ModelManager.decode_for`) and write its files (none when ``out_dir``
    is None; the listening WAVs named in ``listening``, see :data:`~mt3_demo.writers.LISTENING`).

    Every failure becomes the result's ``error`` (a message for people); a result is either
    complete, files included, or an error — never half. :class:`Cancelled` (raised by
    ``on_progress``) is not a failure: it propagates.
    """
    spec = manager.spec(model_id)
    result = ModelResult(model_id, spec.display_name)
    phases = PhaseReporter(model_id, clip, on_progress)
    try:
        decode = manager.decode_for(model_id, decode)  # bad options fail before anything loads
    except OptionError as e:
        result.error, result.error_kind = str(e), "options"
        return result
    avail = manager.check(model_id)  # weights that cannot be had here fail at once, not after retries
    if not avail.usable:
        result.error, result.error_kind = avail.error(model_id), "checkpoint"
        return result
    phases.report(0.0, "starting" if avail.status == "loaded" else "loading weights")
    try:
        transcription = manager.transcribe(model_id, clip, decode, progress=phases.segments,
                                           on_loaded=lambda t: phases.loaded(t, decode), on_wait=phases.waiting)
        if out_dir is not None:
            result.files, result.synth_method = writers.write_model_files(
                transcription.notes, clip, out_dir, writers.safe_name(model_id), spec.display_name,
                listening, soundfont=manager.settings.soundfont)
        result.transcription = transcription
    except Cancelled:
        raise
    except CheckpointError as e:
        result.error, result.error_kind = str(e), "checkpoint"
    except AudioError as e:
        result.error, result.error_kind = str(e), "audio"
    except OptionError as e:
        result.error, result.error_kind = str(e), "options"
    except BackendError as e:
        result.error, result.error_kind = str(e), "backend"
    except (MemoryError, torch.OutOfMemoryError):
        manager.unload_idle()
        result.error = f"{spec.display_name} ran out of memory on this clip; try a shorter clip."
        result.error_kind = "memory"
    except Exception as e:  # noqa: BLE001 - a model bug must not take the app down
        log.exception("model %s failed", model_id)
        result.error = f"{spec.display_name} failed: {type(e).__name__}: {e}"
        result.error_kind = "model"
    return result


def transcribe_each(clip: Clip, model_ids: list[str], manager: ModelManager, out_dir: Path | None,
                    on_progress: ProgressCallback | None = None,
                    listening: Collection[str] = writers.LISTENING,
                    decode: Mapping[str, Any] | None = None) -> Iterator[ModelResult]:
    """:func:`transcribe_one` for each model in turn, yielding each result when done; ``decode``
    maps a model id to its decode options (a model without an entry decodes with its defaults).

    Models run one after another: they share one device, and on a 2-core CPU running them at once
    would only make every column slower. Unknown ids must have been refused before (``manager.spec``).
    """
    decode = decode or {}
    for model_id in model_ids:
        yield transcribe_one(clip, model_id, manager, out_dir, on_progress, listening, decode.get(model_id))


def finish(results: list[ModelResult], clip: Clip, reference: list[Note] | None = None,
           reference_name: str | None = None) -> Run:
    """Score every transcription against the reference (when given) and the models against each other;
    each model's instrument leakage goes into its ``analyses["instruments"]``."""
    done = {r.model_id: r.transcription.notes for r in results if r.ok}
    for r in results:
        if r.ok:
            r.analyses["instruments"] = leakage.instrument_leakage(r.transcription.notes, reference)
    ids, matrix = metrics.agreement(done)
    scores = {m: metrics.score(notes, reference) for m, notes in done.items()} if reference is not None else {}
    return Run(clip, list(results), reference, reference_name, scores, ids,
               [[round(float(v), 6) for v in row] for row in matrix])


def run_models(clip: Clip, model_ids: list[str], manager: ModelManager, out_dir: Path,
               reference: list[Note] | None = None, reference_name: str | None = None,
               include_tokens: bool = False, listening: Collection[str] = writers.LISTENING,
               on_result: Callable[[ModelResult], None] | None = None,
               decode: Mapping[str, Any] | None = None) -> Run:
    """The whole run: transcribe (``decode``: model id -> decode options), write each model's
    files, finish, write the run's files."""
    results = []
    for result in transcribe_each(clip, model_ids, manager, out_dir, listening=listening, decode=decode):
        if on_result is not None:
            on_result(result)
        results.append(result)
    run = finish(results, clip, reference, reference_name)
    writers.write_run(run, out_dir, include_tokens)
    return run
