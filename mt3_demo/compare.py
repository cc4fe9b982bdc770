"""Run several models on one clip and yield each result as soon as it is ready.

This is the one place that turns a model's notes into the files people see (MIDI, piano-roll PNG,
synthesized audio); the UI and the CLI both call it, so they always show the same thing.
"""
from __future__ import annotations

import json
import logging
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .audio import AudioError, Clip
from .checkpoints import CheckpointError
from .manager import ModelManager
from .notes import Note, Transcription, note_stats, write_midi

log = logging.getLogger(__name__)

# on_progress(model_id, fraction 0..1, description)
ProgressCallback = Callable[[str, float, str], None]


# The cross-model summary: (key in ModelResult.summary_row(), column header), for the UI table and
# summary.md alike.
SUMMARY_COLUMNS = [("model", "Model"), ("status", "Status"), ("notes", "Notes"), ("pitched", "Pitched"),
                   ("drum", "Drum"), ("instruments", "Instruments"), ("load_s", "Load s"),
                   ("inference_s", "Inference s"), ("rtf", "RTF"), ("device", "Device")]


@dataclass
class ModelResult:
    """One model's outcome on one clip: a transcription and its files, or an error message."""

    model_id: str
    display_name: str
    transcription: Transcription | None = None
    error: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # "midi", "png", "audio"
    synth_method: str | None = None

    @property
    def ok(self) -> bool:
        return self.transcription is not None and self.error is None

    def summary_row(self) -> dict[str, Any]:
        """One row of the cross-model summary table (keys: ``SUMMARY_COLUMNS``)."""
        if self.transcription is None:
            return {"model": self.display_name, "status": f"error: {self.error}"}
        t = self.transcription
        stats = note_stats(t.notes)
        return {
            "model": self.display_name,
            "status": "ok",
            "notes": stats["total"],
            "pitched": stats["pitched"],
            "drum": stats["drum"],
            "instruments": stats["instruments"],
            "load_s": round(t.load_seconds, 2),
            "inference_s": round(t.inference_seconds, 2),
            "rtf": round(t.rtf, 3),
            "device": t.device,
        }


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "clip"


def render_files(notes: list[Note], clip: Clip, out_dir: Path, stem: str, title: str,
                 synthesize: bool = True) -> tuple[dict[str, Path], str | None]:
    """MIDI + piano-roll PNG for one note list, and with ``synthesize`` the transcription rendered
    to audio three ways: as synthesized ("audio"), level-matched to the original ("audio_matched",
    so a side-by-side listen is fair) and original-left / transcription-right ("mix", so misses are
    audible). Returns (files, synth method)."""
    from . import pianoroll

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"midi": write_midi(notes, out_dir / f"{stem}.mid", end_time=clip.duration)}
    png = out_dir / f"{stem}.png"
    pianoroll.save_png(notes, clip.duration, png, title=title)
    files["png"] = png
    method = None
    if synthesize:
        from . import synth

        audio, rate, method = synth.render_audio(notes, end_time=clip.duration)
        original = clip.original_mono(rate)
        files["audio"] = synth.write_wav(out_dir / f"{stem}.wav", audio, rate)
        files["audio_matched"] = synth.write_wav(out_dir / f"{stem}__level_matched.wav",
                                                 synth.match_level(audio, original), rate)
        files["mix"] = synth.write_wav(out_dir / f"{stem}__original_L_transcription_R.wav",
                                       synth.mix(original, audio, mode="stereo"), rate)
    return files, method


def run(clip: Clip, model_ids: list[str], manager: ModelManager, out_dir: Path,
        on_progress: ProgressCallback | None = None, synthesize: bool = True) -> Iterator[ModelResult]:
    """Transcribe ``clip`` with each model in turn, yielding each :class:`ModelResult` when done.

    Models run one after another: they share one device, and on a 2-core CPU running them at once
    would only make every column slower. Errors are caught per model and returned as messages.
    """
    for model_id in model_ids:
        try:
            spec = manager.spec(model_id)
        except CheckpointError as e:
            yield ModelResult(model_id, model_id, error=str(e))
            continue
        result = ModelResult(model_id, spec.display_name)

        def progress(done: int, total: int, _id: str = model_id) -> None:
            if on_progress is not None and total:
                on_progress(_id, done / total, f"{spec.display_name}: segment {done}/{total}")

        if on_progress is not None:
            loaded = model_id in manager.loaded_ids()
            on_progress(model_id, 0.0, f"{spec.display_name}: {'starting' if loaded else 'loading weights'}…")
        try:
            transcription = manager.transcribe(model_id, clip, progress=progress)
            # Set only once its files exist: a result is either complete or an error, never half.
            result.files, result.synth_method = render_files(
                transcription.notes, clip, out_dir, safe_name(model_id), spec.display_name,
                synthesize=synthesize)
            result.transcription = transcription
        except (CheckpointError, AudioError) as e:
            result.error = str(e)
        except (MemoryError, torch.OutOfMemoryError):
            manager.unload_idle()
            result.error = f"{spec.display_name} ran out of memory on this clip; try a shorter clip."
        except Exception as e:  # noqa: BLE001 - a model bug must not take the app down
            log.exception("model %s failed", model_id)
            result.error = f"{spec.display_name} failed: {type(e).__name__}: {e}"
        yield result


@dataclass
class RunReport:
    """Everything computed across models once a run ends."""

    scores: dict[str, dict]  # model id → metrics.score(...) (empty without a reference)
    agreement_ids: list[str]
    agreement: list[list[float]]  # pairwise onset F1, symmetric, unit diagonal
    results_json: Path
    summary_md: Path
    zip_path: Path
    instruments: dict[str, dict] = field(default_factory=dict)  # model id → leakage.instrument_leakage(...)
    stems: dict[str, Path] = field(default_factory=dict)  # model id → zip of one MIDI per instrument
    diff_pngs: dict[str, Path] = field(default_factory=dict)  # model id → <model>_diff.png (with a reference)


def finish_run(results: list[ModelResult], clip: Clip, out_dir: Path,
               reference: list[Note] | None = None, reference_name: str | None = None,
               include_tokens: bool = False) -> RunReport:
    """Score against the reference, compute model agreement, write the report and zip the bundle.

    The CLI's ``compare`` and the UI's download write the same bundle through this function.
    """
    from . import leakage, metrics, pianoroll, stems

    done = {r.model_id: r.transcription.notes for r in results if r.ok}
    ids, matrix = metrics.agreement(done)
    matrix = [[round(float(v), 6) for v in row] for row in matrix]
    extra_files = []
    if len(ids) > 1:  # how much the models agree, as a picture for the bundle
        heatmap = out_dir / "agreement.png"
        pianoroll.save_figure(pianoroll.agreement_heatmap(ids, matrix), heatmap)
        extra_files.append(heatmap)
    scores = {m: metrics.score(notes, reference) for m, notes in done.items()} if reference is not None else {}
    instruments = {m: leakage.instrument_leakage(notes, reference) for m, notes in done.items()}
    stem_zips = {m: stems.write_stems_zip(notes, out_dir / f"{safe_name(m)}__stems.zip", end_time=clip.duration)
                 for m, notes in done.items()}
    diff_pngs: dict[str, Path] = {}
    if reference is not None:  # matched / extra / missed, with the flat onset matching of the scores
        names = {r.model_id: r.display_name for r in results}
        for m, notes in done.items():
            fig = pianoroll.render_diff(notes, reference, metrics.note_diff(notes, reference, "onset"),
                                        clip.duration, title=names[m])
            diff_pngs[m] = pianoroll.save_figure(fig, out_dir / f"{safe_name(m)}_diff.png")
    extra: dict[str, Any] = {"agreement": {"models": ids, "onset_f1": matrix}}
    if reference is not None:
        extra["reference"] = reference_name
    results_json = write_report(results, clip, out_dir, extra=extra, include_tokens=include_tokens,
                                scores=scores, instruments=instruments)
    stem = safe_name(clip.path.stem if clip.path else "clip")
    zip_path = out_dir / f"{stem}__mt3-demo-report.zip"
    # This run's MIDI and PNG files, results.json and summary.md (nothing else that may sit in the
    # folder); audio previews stay out to keep it small.
    bundle = [r.files[k] for r in results if r.ok for k in ("midi", "png") if k in r.files]
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in bundle + extra_files + list(diff_pngs.values()) + [results_json, out_dir / "summary.md"]:
            zf.write(p, arcname=f"{stem}/{p.name}")
        for m, stem_zip in stem_zips.items():  # stems unpacked: stems/<model>/<program>_<name>.mid
            with zipfile.ZipFile(stem_zip) as sz:
                for name in sz.namelist():
                    zf.writestr(f"{stem}/stems/{safe_name(m)}/{name}", sz.read(name))
    return RunReport(scores, ids, matrix, results_json, out_dir / "summary.md", zip_path,
                     instruments=instruments, stems=stem_zips, diff_pngs=diff_pngs)


def write_report(results: list[ModelResult], clip: Clip, out_dir: Path,
                 extra: dict[str, Any] | None = None, include_tokens: bool = False,
                 scores: dict[str, dict] | None = None, instruments: dict[str, dict] | None = None) -> Path:
    """``results.json`` + ``summary.md`` for a run.

    ``scores`` (model id → ``metrics.score`` output) is stored in each model's entry when a reference
    was given; ``instruments`` (model id → ``leakage.instrument_leakage`` output) under
    ``"instruments"``; ``extra`` holds run-level fields such as the agreement matrix.
    """
    scores = scores or {}
    instruments = instruments or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "audio": str(clip.path) if clip.path else None,
        "audio_seconds": round(clip.duration, 6),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "warnings": clip.warnings,
        "models": {},
    }
    for r in results:
        entry: dict[str, Any] = {"display_name": r.display_name}
        if r.transcription is not None:
            entry.update(r.transcription.to_json(include_tokens=include_tokens))
            entry["files"] = {k: v.name for k, v in r.files.items()}
            if r.model_id in scores:
                entry["scores"] = scores[r.model_id]
            if r.model_id in instruments:
                entry["instruments"] = instruments[r.model_id]
        else:
            entry["error"] = r.error
        payload["models"][r.model_id] = entry
    if extra:
        payload.update(extra)
    path = out_dir / "results.json"
    path.write_text(json.dumps(payload, indent=2))
    lines = [f"# Transcription comparison — {clip.path.name if clip.path else 'clip'}",
             "", f"Audio: {clip.duration:.2f} s", "",
             "| " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |",
             "|" + "---|" * len(SUMMARY_COLUMNS)]
    for r in results:
        row = r.summary_row()
        lines.append("| " + " | ".join(str(row.get(k, "")) for k, _ in SUMMARY_COLUMNS) + " |")
    if scores:
        lines += ["", "Scores against the reference (F1, mir_eval: 50 ms onset tolerance):", "",
                  "| model | onset F1 | onset+offset F1 | program-aware F1 |", "|---|---|---|---|"]
        for r in results:
            if r.model_id in scores:
                sc = scores[r.model_id]
                lines.append(f"| {r.display_name} | {sc['onset']['f1']:.3f} | {sc['onset_offset']['f1']:.3f} | "
                             f"{sc['program_aware']['f1']:.3f} |")
    if instruments:
        lines += ["", *instrument_lines(results, instruments, markdown=True)]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return path


def _instrument_list(entries: list[dict]) -> str:
    return ", ".join(f"{e['name']} ({e['notes']})" for e in entries) or "—"


def instrument_lines(results: list[ModelResult], instruments: dict[str, dict], markdown: bool) -> list[str]:
    """The instrument-leakage view as text: a Markdown table (summary.md) or plain lines (CLI).

    MR-MT3's measures (distinct instruments; detection P/R/F1 of the program set), drums counted as
    their own instrument; leaked = predicted but absent from the reference, with note counts."""
    with_ref = any("detection" in v for v in instruments.values())
    out = []
    if markdown:
        out += ["Instruments (MR-MT3's leakage measures; drums count as their own instrument):", ""]
        if with_ref:
            out += ["| model | instruments | reference | detection P / R / F1 | family F1 | leaked | missed |",
                    "|---|---|---|---|---|---|---|"]
        else:
            out += ["| model | instruments |", "|---|---|"]
    for r in results:
        m = instruments.get(r.model_id)
        if m is None:
            continue
        if "detection" not in m:
            out.append(f"| {r.display_name} | {m['count']} |" if markdown
                       else f"{r.model_id}: {m['count']} instruments")
            continue
        d = m["detection"]
        prf = f"{d['precision']:.2f} / {d['recall']:.2f} / {d['f1']:.2f}"
        leaked, missed = _instrument_list(m["leaked"]), _instrument_list(m["missed"])
        if markdown:
            out.append(f"| {r.display_name} | {m['count']} | {m['reference_count']} | {prf} | "
                       f"{m['family_detection']['f1']:.2f} | {leaked} | {missed} |")
        else:
            out.append(f"{r.model_id}: {m['count']} instruments (reference {m['reference_count']}), detection "
                       f"P/R/F1 {prf}, family F1 {m['family_detection']['f1']:.2f}; leaked: {leaked}; missed: {missed}")
    return out
