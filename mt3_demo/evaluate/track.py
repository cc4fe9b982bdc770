"""One (track, model): read the recording and its reference, transcribe, score — one result line.

The same function runs in this process (``evaluate`` without ``--ray``) and inside a Ray actor, so
both give the same lines. It writes no file: the transcription comes back as MIDI bytes and the
caller (the driver) writes it and appends the line, in that order — a line in ``tracks.jsonl``
means its MIDI file is there.

The scores and instrument measures are shaped by the same code as ``results.json``
(:func:`mt3_demo.pipeline.finish` then :func:`mt3_demo.writers.run_json`), so a track's
``"scores"`` are exactly what ``compare --reference`` writes for that recording.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import metrics, writers
from ..audio import AudioError, load_clip
from ..manager import ModelManager
from ..notes import notes_from_midi
from ..options import DEFAULT_MAX_SECONDS
from ..pipeline import finish, transcribe_one
from .datasets import Track

STATS_KEYS = ("total", "pitched", "drum", "instruments")


@dataclass
class TrackResult:
    line: dict[str, Any]
    midi: bytes | None  # the transcription as a MIDI file; None when it failed


def midi_path(model_id: str, track: Track) -> str:
    """Where a transcription goes, relative to the output folder: ``midi/<model>/<track name>.mid``."""
    return f"midi/{writers.safe_name(model_id)}/{track.name}.mid"


def _failed(line: dict[str, Any], kind: str, message: str, started: float) -> TrackResult:
    line.update(error=message, error_kind=kind)
    line.setdefault("timings", {})["total_s"] = round(time.perf_counter() - started, 6)
    return TrackResult(line, None)


def evaluate_track(track: Track, model_id: str, manager: ModelManager, decode: Any = None,
                   max_seconds: float = DEFAULT_MAX_SECONDS) -> TrackResult:
    """Transcribe ``track`` with ``model_id`` and score it against the track's reference.

    Never raises for a bad file or a failing model: the line then holds ``"error"`` (a sentence)
    and ``"error_kind"`` ("reference", "audio", or the pipeline's kinds: "checkpoint", "options",
    "memory", "model").
    """
    started = time.perf_counter()
    line: dict[str, Any] = {"track": track.rel, "model": model_id}
    try:
        reference = notes_from_midi(track.midi)
    except Exception as e:  # noqa: BLE001 - any parse failure is the dataset's file
        return _failed(line, "reference", f"reference MIDI {track.midi.name} could not be read: "
                                          f"{type(e).__name__}: {e}", started)
    try:
        clip = load_clip(track.audio, limit_seconds=max_seconds)
    except AudioError as e:
        return _failed(line, "audio", str(e), started)
    except Exception as e:  # noqa: BLE001 - a decoder crash on a damaged file is the file's fault
        return _failed(line, "audio", f"{track.audio.name} could not be read: {type(e).__name__}: {e}", started)
    read_s = time.perf_counter() - started

    result = transcribe_one(clip, model_id, manager, out_dir=None, decode=decode)
    line["audio_seconds"] = round(clip.duration, 6)
    if not result.ok:
        line["timings"] = {"read_s": round(read_s, 6)}
        return _failed(line, result.error_kind or "model", result.error or "failed", started)

    scoring = time.perf_counter()
    notes = result.transcription.notes
    entry = writers.run_json(finish([result], clip, reference, track.midi.name))["models"][model_id]
    line.update(
        scores=entry["scores"],
        families=metrics.family_scores(notes, reference),
        instruments=entry["instruments"],
        stats={k: entry["stats"][k] for k in STATS_KEYS},
        weights=entry["weights"],  # a table of test weights must not read as the official model's
        device=entry["device"],
        dtype=entry["dtype"],
        midi=midi_path(model_id, track),
    )
    with tempfile.TemporaryDirectory() as tmp:
        midi = writers.write_midi(notes, clip.duration, Path(tmp) / "t.mid").read_bytes()
    line["timings"] = {**entry["timings"], "read_s": round(read_s, 6),
                       "score_s": round(time.perf_counter() - scoring, 6),
                       "total_s": round(time.perf_counter() - started, 6)}
    return TrackResult(line, midi)
