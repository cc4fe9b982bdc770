"""An evaluation from start to end: what is left to do, doing it (here or on Ray), the aggregates.

    Dataset ─► todo: (track, model) pairs not yet in OUT/tracks.jsonl
            ─► here: one model loaded at a time, its tracks in turn       ┐ evaluate_track per pair;
               --ray: actors per model, tracks fanned out (cluster.py)    ┘ the driver writes each
                                                                            MIDI, then its line
            ─► table.md, table.csv, f1.png (table.py), summary.json

``summary.json`` says what produced the folder (data, layout, split, models, options) and when:
``"created"`` is when this output folder's evaluation first started, ``"finished"`` when its
last complete run ended — the only fields that differ between two runs of the same evaluation.
A re-run into the same folder with other data or other options for a model already there is
refused: its lines would be mixed with the old ones.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from ..manager import ModelManager
from ..options import DEFAULT_MAX_SECONDS, Settings
from ..writers import check_output_dir
from .datasets import Dataset, Track
from .progress import Progress
from .table import write_tables
from .track import TrackResult, evaluate_track
from .tracklog import TrackLog

SUMMARY = "summary.json"
TRACKS = "tracks.jsonl"


class EvaluateError(ValueError):
    """An evaluation that cannot start (its output folder holds another one...). For people."""


@dataclass(frozen=True)
class ManagerRecipe:
    """How to build the run's :class:`ModelManager` in any process: a Ray actor builds its own from
    this (a manager holds locks and loaded models, so it does not travel; its recipe does). The
    device is the settings' wish, so each process settles it on its own hardware."""

    settings: Settings = field(default_factory=Settings)
    options: dict[str, Any] = field(default_factory=dict)  # model id -> load options
    checkpoints: dict[str, Path] = field(default_factory=dict)

    def build(self) -> ModelManager:
        return ModelManager(settings=self.settings, options=dict(self.options), checkpoints=dict(self.checkpoints))

    @classmethod
    def of(cls, manager: ModelManager) -> "ManagerRecipe":
        return cls(manager.settings, dict(manager.options), dict(manager.checkpoints))


@dataclass
class RayPlan:
    """``--ray``: the cluster and how each model's actors are placed."""

    address: str = "auto"
    workers_per_model: int = 1
    gpus_per_model: float = 0.0  # per actor; fractions let small models share a card
    cpus_per_worker: float = 1.0


@dataclass
class Evaluation:
    dataset: Dataset
    model_ids: list[str]
    out: Path
    recipe: ManagerRecipe
    decode: dict[str, Any] = field(default_factory=dict)  # model id -> decode options
    max_seconds: float = DEFAULT_MAX_SECONDS  # longer recordings fail as "audio" (Settings.max_seconds)
    retry_failed: bool = False

    def options_record(self) -> dict[str, Any]:
        """Per model what decides its results (JSON-ready): load and decode options, checkpoint."""
        out = {}
        for m in self.model_ids:
            load, decode = self.recipe.options.get(m), self.decode.get(m)
            checkpoint = self.recipe.checkpoints.get(m)
            out[m] = {"load": _plain(load), "decode": _plain(decode),
                      "checkpoint": str(checkpoint) if checkpoint else None}
        return out


def _plain(options: Any) -> Any:
    if options is None:
        return None
    return json.loads(json.dumps(dataclasses.asdict(options), default=str))


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # never a half-written summary


def _check_previous(job: Evaluation, previous: dict[str, Any]) -> None:
    data = str(job.dataset.root.resolve())
    if previous.get("data") != data or previous.get("split") != job.dataset.split:
        raise EvaluateError(f"{job.out} holds an evaluation of other data ({previous.get('data')}, split "
                            f"{previous.get('split')}); give another --out.")
    mine = job.options_record()
    for m, options in previous.get("options", {}).items():
        if m in mine and mine[m] != options:
            raise EvaluateError(f"{job.out} holds results of {m} with other options ({json.dumps(options)}); "
                                f"give another --out, or the same options.")


def _summary(job: Evaluation, created: str, execution: dict[str, Any]) -> dict[str, Any]:
    return {"data": str(job.dataset.root.resolve()), "layout": job.dataset.layout, "split": job.dataset.split,
            "tracks": len(job.dataset.tracks), "models": list(job.model_ids),
            "options": job.options_record(), "max_seconds": job.max_seconds, "execution": execution, "created": created}


def heading(dataset: Dataset) -> str:
    split = f", split {dataset.split}" if dataset.split else ""
    return f"Evaluation of {dataset.root.name} ({dataset.layout}{split}, {len(dataset.tracks)} tracks)"


Recorder = Callable[[TrackResult], None]


def run_local(job: Evaluation, todo: list[tuple[Track, str]], record: Recorder,
              manager: ModelManager | None = None) -> None:
    """One model loaded at a time (it is unloaded before the next one loads), its tracks in turn."""
    manager = manager or job.recipe.build()
    for model_id in job.model_ids:
        tracks = [t for t, m in todo if m == model_id]
        for track in tracks:
            record(evaluate_track(track, model_id, manager, job.decode.get(model_id), job.max_seconds))
        if tracks:
            manager.unload(model_id)


def evaluate(job: Evaluation, manager: ModelManager | None = None, ray: RayPlan | None = None,
             stream: TextIO | None = None, on_line: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Evaluate every (track, model) of ``job`` not yet in ``OUT/tracks.jsonl``, then write the
    aggregates. ``manager``: the local run's manager (built from the recipe when None); ``ray``:
    run on a Ray cluster instead. ``on_line(line)`` is called after each line is on disk.
    Returns the summary (as written to ``summary.json``)."""
    out = check_output_dir(job.out, "--out")
    (out / "midi").mkdir(exist_ok=True)
    previous = {}
    if (out / SUMMARY).is_file():
        try:
            previous = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
    if previous:
        _check_previous(job, previous)
    created = previous.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    execution = ({"ray": True, **dataclasses.asdict(ray)} if ray else {"ray": False})
    summary = _summary(job, created, execution)
    summary["options"] = {**previous.get("options", {}), **summary["options"]}
    _write_json(out / SUMMARY, {**summary, "complete": False})

    log = TrackLog(out / TRACKS)
    keys = {(t.rel, m) for t in job.dataset.tracks for m in job.model_ids}
    done = {k for k, line in log.lines().items() if k in keys and not (job.retry_failed and "error" in line)}
    todo = [(t, m) for m in job.model_ids for t in job.dataset.tracks if (t.rel, m) not in done]
    progress = Progress(len(todo), stream, skipped=len(done))

    def record(result: TrackResult) -> None:
        line = result.line
        if result.midi is not None:  # the MIDI first: a line on disk means its MIDI is there
            path = out / line["midi"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(result.midi)
        log.append(line)
        progress.update(line["model"], line["track"], "error" not in line)
        if on_line is not None:
            on_line(line)

    started = time.perf_counter()
    if ray is not None:
        from .cluster import run_on_ray  # Ray is imported only for --ray

        run_on_ray(job, todo, record, ray)
    else:
        run_local(job, todo, record, manager)

    lines = [line for k, line in log.lines().items() if k in keys]
    agg = write_tables(out, lines, job.model_ids, heading(job.dataset))
    summary.update(complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   wall_s=round(time.perf_counter() - started, 3), evaluated_now=len(todo),
                   counts={m: {"tracks": a["tracks"], "failed": a["failed"]} for m, a in agg.items()},
                   means={m: {k: s["mean"] for k, s in a["metrics"].items()} for m, a in agg.items()},
                   timing=_timing(lines, job.model_ids))
    _write_json(out / SUMMARY, summary)
    return summary


def _timing(lines: list[dict], model_ids: list[str]) -> dict[str, Any]:
    """Per model: audio seconds transcribed, inference seconds, their ratio (RTF), from the lines."""
    out = {}
    for m in model_ids:
        ok = [line for line in lines if line["model"] == m and "error" not in line]
        audio = math.fsum(line["audio_seconds"] for line in ok)
        inference = math.fsum(line["timings"]["inference_s"] for line in ok)
        out[m] = {"audio_s": round(audio, 3), "inference_s": round(inference, 3),
                  "rtf": round(inference / audio, 4) if audio else None}
    return out

