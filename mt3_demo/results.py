"""What a run produced: per model a :class:`ModelResult`, for the whole request a :class:`Run`.

Plain data, made by :mod:`mt3_demo.pipeline`, read by :mod:`mt3_demo.writers` and the UI. Further
analyses attach here without new plumbing: per model in ``ModelResult.analyses``, per run in
``Run.extras`` (JSON-ready values, written into ``results.json`` as they are).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audio import Clip
from .notes import Note, Transcription


@dataclass
class ModelResult:
    """One model's outcome on one clip: a transcription and its files, or an error message.

    ``analyses`` holds further per-model results by name (JSON-ready values), e.g. a comparison
    with the reference; they are written into the model's entry of ``results.json``.
    """

    model_id: str
    display_name: str
    transcription: Transcription | None = None
    error: str | None = None
    error_kind: str | None = None  # "checkpoint", "audio", "options", "memory", "backend" or "model"
    files: dict[str, Path] = field(default_factory=dict)  # "midi", "png", "audio", "audio_matched", "mix"
    synth_method: str | None = None
    analyses: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.transcription is not None and self.error is None


@dataclass
class Run:
    """Everything one request produced: every model's result and what compares them."""

    clip: Clip
    results: list[ModelResult]
    reference: list[Note] | None = None
    reference_name: str | None = None  # the reference's file name
    scores: dict[str, dict] = field(default_factory=dict)  # model id -> metrics.score(...)
    agreement_ids: list[str] = field(default_factory=list)
    agreement: list[list[float]] = field(default_factory=list)  # pairwise onset F1, unit diagonal
    extras: dict[str, Any] = field(default_factory=dict)  # further run-level results (JSON-ready)
    files: dict[str, Path] = field(default_factory=dict)  # writers.write_run: results_json, summary_md, zip…
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def ok_results(self) -> list[ModelResult]:
        return [r for r in self.results if r.ok]

    def result(self, model_id: str) -> ModelResult:
        return next(r for r in self.results if r.model_id == model_id)
