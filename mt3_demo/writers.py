"""The files people get: one set of writers for CLI ``transcribe``, CLI ``compare`` and the UI.

Per model: MIDI, piano-roll PNG and listening WAVs (:func:`write_model_files`), and its JSON entry
(:func:`model_entry`). Per run: ``results.json``, ``summary.md``, the agreement heatmap and the
report zip (:func:`write_run`). Whatever calls them, the same notes give the same bytes.

JSON and messages carry file names only, never server paths.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Collection, Mapping

from . import metrics, pianoroll, stems, synth
from . import notes as notes_mod
from .audio import Clip
from .notes import Note
from .results import ModelResult, Run

# The cross-model summary: (key in summary_row(), column header), for the UI table and summary.md.
SUMMARY_COLUMNS = [("model", "Model"), ("weights", "Weights"), ("status", "Status"), ("notes", "Notes"), ("pitched", "Pitched"),
                   ("drum", "Drum"), ("instruments", "Instruments"), ("load_s", "Load s"),
                   ("inference_s", "Inference s"), ("rtf", "RTF"), ("device", "Device")]


class OutputError(ValueError):
    """An output path that cannot be written (a folder, an unwritable place). For people."""


def safe_name(text: str) -> str:
    """A file-name stem made of letters, digits, ``_.-`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "clip"


# ------------------------------------------------------------------------------------------------
# File names: every file a run writes is named here, so the checks below know them before the run

# Per model (by kind, ``{stem}`` is the model's safe name) and per run (``{stem}``: the recording's).
MODEL_FILES = {"midi": "{stem}.mid", "png": "{stem}.png", "stems": "{stem}__stems.zip",
               "audio": "{stem}.wav", "audio_matched": "{stem}__level_matched.wav",
               "mix": "{stem}__original_L_transcription_R.wav", "diff_png": "{stem}_diff.png"}
RUN_FILES = {"results_json": "results.json", "summary_md": "summary.md", "agreement_png": "agreement.png",
             "zip": "{stem}__mt3-demo-report.zip"}


def run_file_names(model_ids: Collection[str], audio_name: str) -> list[str]:
    """The names of every file a ``compare`` run of these models on this recording may write."""
    names = [pattern.format(stem=safe_name(m)) for m in model_ids for pattern in MODEL_FILES.values()]
    return names + [pattern.format(stem=safe_name(Path(audio_name).stem)) for pattern in RUN_FILES.values()]


# ------------------------------------------------------------------------------------------------
# Output paths, checked before any work: a run never fails at its end for a name, and never writes
# over one of its own inputs.

def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _fs_limits(path: Path) -> tuple[int, int]:
    """(longest name, longest path) in bytes where ``path`` would be created (POSIX defaults
    255 / 4096 where the file system does not say)."""
    folder = Path(os.path.abspath(path))
    while not os.path.isdir(folder) and folder != folder.parent:  # (isdir: False for a name too long)
        folder = folder.parent
    limits = []
    for key, default in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(int(os.pathconf(folder, key)) or default)
        except (OSError, ValueError, AttributeError):
            limits.append(default)
    return limits[0], limits[1]


def check_name_fits(path: Path, what: str) -> None:
    """Every part of ``path`` and the whole of it are within the file system's limits
    (``NAME_MAX``, ``PATH_MAX``); the message names no folder of the machine."""
    name_max, path_max = _fs_limits(path)
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise OutputError(f"{what}: the name {_short(part)} is {size} bytes long; this file system "
                              f"allows at most {name_max}.")
    size = len(os.fsencode(os.path.abspath(path)))
    if size >= path_max:
        raise OutputError(f"{what}: the path to {_short(Path(path).name)} would be {size} bytes long; this "
                          f"file system allows at most {path_max - 1}.")


def _input_files(inputs: Mapping[str, Any]) -> list[tuple[str, Path]]:
    """(what, file) of every existing input file; a folder (checkpoints) stands for the files in it
    and in its model folders, which a run may read."""
    out = []
    for what, path in inputs.items():
        if path is None or str(path) in ("", "-"):
            continue
        path = Path(path)
        if path.is_dir():
            out += [(what, f) for f in (*path.glob("*"), *path.glob("*/*")) if f.is_file()]
        elif path.exists():
            out.append((what, path))
    return out


def check_not_input(path: Path, what: str, inputs: Mapping[str, Any]) -> None:
    """``path`` is not (the same file as) one of the inputs: writing it would destroy one."""
    path = Path(path)
    if not path.exists():
        return  # a file that does not exist yet is no input
    for input_what, source in _input_files(inputs):
        try:
            same = os.path.samefile(path, source)
        except OSError:
            continue
        if same:
            raise OutputError(f"{what} {_short(path.name)} is the {input_what} file itself; writing it would "
                              "overwrite your input, so give another name.")


def check_output_file(path: Path, what: str, inputs: Mapping[str, Any] | None = None) -> Path:
    """``path`` can be written as a file: not a folder, not one of the ``inputs``, a name the file
    system takes, its folder exists or can be made."""
    path = Path(path)
    check_name_fits(path, what)  # first: asking about a name the system refuses raises
    if path.is_dir():
        raise OutputError(f"{what} {_short(path.name) or path} is a folder; give a file name.")
    check_not_input(path, what, inputs or {})
    check_output_dir(path.parent, what)
    return path


def check_outputs_differ(outputs: Mapping[str, Any]) -> None:
    """No two output flags name the same file (the second would overwrite the first)."""
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        if path is None or str(path) == "-":
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise OutputError(f"{seen[key]} and {what} name the same file {_short(Path(path).name)}; "
                              "give each its own name.")
        seen[key] = what


def check_output_dir(folder: Path, what: str, names: Collection[str] = (),
                     inputs: Mapping[str, Any] | None = None) -> Path:
    """``folder`` exists (made if needed) and accepts a new file; the ``names`` to be written in it
    fit the file system and are none of the ``inputs``."""
    folder = Path(folder)
    check_name_fits(folder, what)  # first: asking about a name the system refuses raises
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what}: {_short(folder.name)} is a file, not a folder.")
    for name in names:
        check_name_fits(folder / name, what)
        check_not_input(folder / name, f"{what}: the run's file", inputs or {})
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputError(f"{what}: cannot write into {_short(folder.name) or folder} "
                          f"({e.strerror or type(e).__name__}).") from None
    return folder


# ------------------------------------------------------------------------------------------------
# Per model


def write_midi(notes: list[Note], duration: float, path: Path) -> Path:
    """The notes as a MIDI file as long as the clip (players line up with the original)."""
    return notes_mod.write_midi(notes, path, end_time=duration)


def write_png(notes: list[Note], duration: float, path: Path, title: str,
              only_instrument: str | None = None) -> Path:
    """The piano roll over the clip's whole duration (rolls of one clip share a time axis)."""
    return pianoroll.save_png(notes, duration, path, title=title, only_instrument=only_instrument)


# The listening WAVs by kind: as synthesized ("audio"), level-matched to the original
# ("audio_matched", so a side-by-side listen is fair) and original-left / transcription-right
# ("mix", so misses are audible). The CLI writes all three; the page plays only the last two; the
# API returns no audio. Each is ~10 MB per minute, so what is not needed is not written.
LISTENING = ("audio", "audio_matched", "mix")
PAGE_LISTENING = ("audio_matched", "mix")


def write_listening(notes: list[Note], clip: Clip, out_dir: Path, stem: str,
                    kinds: Collection[str] = LISTENING, soundfont: Path | None = None) -> tuple[dict[str, Path], str]:
    """The transcription rendered once (with ``soundfont``: ``Settings.soundfont``), written as the
    listening WAVs named in ``kinds`` (of :data:`LISTENING`). Returns (files, synth method)."""
    audio, rate, method = synth.render_audio(notes, end_time=clip.duration, soundfont=soundfont)
    original = clip.original_mono(rate)
    signals = {  # each made only when its file is asked for
        "audio": lambda: audio,
        "audio_matched": lambda: synth.match_level(audio, original),
        "mix": lambda: synth.mix(original, audio, mode="stereo"),
    }
    return {kind: synth.write_wav(out_dir / MODEL_FILES[kind].format(stem=stem), make(), rate)
            for kind, make in signals.items() if kind in kinds}, method


def write_model_files(notes: list[Note], clip: Clip, out_dir: Path, stem: str, title: str,
                      listening: Collection[str] = LISTENING,
                      soundfont: Path | None = None) -> tuple[dict[str, Path], str | None]:
    """MIDI + PNG + stems zip + the listening WAVs named in ``listening`` (none: nothing is
    synthesized) of one model. Returns (files, synth method). No notes: no stems and no audio
    (an empty zip and silent WAVs would only look like results); the MIDI and PNG stay, for the
    record (the page does not offer them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = {kind: out_dir / pattern.format(stem=stem) for kind, pattern in MODEL_FILES.items()}
    files = {"midi": write_midi(notes, clip.duration, name["midi"]),
             "png": write_png(notes, clip.duration, name["png"], title)}
    if not notes:
        return files, None
    files["stems"] = stems.write_stems_zip(notes, name["stems"], end_time=clip.duration)
    method = None
    if listening:
        wavs, method = write_listening(notes, clip, out_dir, stem, listening, soundfont)
        files.update(wavs)
    return files, method


def model_entry(result: ModelResult, include_tokens: bool = False) -> dict[str, Any]:
    """One model's JSON: the transcription (notes, stats, timings, model facts), the names of its
    files, its scores and analyses when present — or its error."""
    entry: dict[str, Any] = {"display_name": result.display_name}
    if result.transcription is None:
        entry["error"] = result.error
        return entry
    entry.update(result.transcription.to_json(include_tokens=include_tokens))
    if result.files:
        entry["files"] = {k: v.name for k, v in result.files.items()}
    entry.update({k: v for k, v in result.analyses.items() if k not in entry})
    return entry


def transcription_json(result: ModelResult, clip: Clip, include_tokens: bool = False) -> dict[str, Any]:
    """What ``transcribe --json`` writes: the model's entry plus the input's name and warnings."""
    payload = model_entry(result, include_tokens)
    payload["audio"] = clip.path.name if clip.path else None
    payload["warnings"] = list(clip.warnings)
    return payload


def summary_row(result: ModelResult) -> dict[str, Any]:
    """One row of the cross-model summary table (keys: ``SUMMARY_COLUMNS``)."""
    if result.transcription is None:
        return {"model": result.display_name, "status": f"error: {result.error}"}
    t = result.transcription
    return {"model": result.display_name, "weights": t.weights, "status": "ok", "notes": t.stats["total"],
            "pitched": t.stats["pitched"], "drum": t.stats["drum"], "instruments": t.stats["instruments"],
            "load_s": round(t.load_seconds, 2), "inference_s": round(t.inference_seconds, 2),
            "rtf": round(t.rtf, 3), "device": t.device}


# ------------------------------------------------------------------------------------------------
# Per run


def run_json(run: Run, include_tokens: bool = False) -> dict[str, Any]:
    """``results.json``: the input, every model's entry, agreement, reference and run extras."""
    payload: dict[str, Any] = {
        "audio": run.clip.path.name if run.clip.path else None,
        "audio_seconds": round(run.clip.duration, 6),
        "created": run.created,
        "warnings": list(run.clip.warnings),
        "models": {r.model_id: _scored_entry(run, r, include_tokens) for r in run.results},
        "agreement": {"models": run.agreement_ids, "onset_f1": run.agreement},
    }
    if run.reference is not None:
        payload["reference"] = run.reference_name
    payload.update({k: v for k, v in run.extras.items() if k not in payload})
    return payload


def _scored_entry(run: Run, result: ModelResult, include_tokens: bool) -> dict[str, Any]:
    entry = model_entry(result, include_tokens)
    if result.model_id in run.scores:
        entry["scores"] = run.scores[result.model_id]
    return entry


def test_weights_warning(results: list[ModelResult]) -> str:
    """One sentence when any result came from test weights (tiny, untrained: their notes are
    noise, and a score of 0 says nothing about the model); "" otherwise."""
    test = [r for r in results if r.ok and r.transcription.weights.startswith("test:")]
    if not test:
        return ""
    names = ", ".join(r.display_name for r in test)
    return (f"Test weights: {names} ran tiny untrained checkpoints; their notes are noise and their "
            "scores say nothing about the real models.")


# The CLI's and summary.md's score columns: (header, key in metrics.score()).
SCORE_COLUMNS = [("onset F1", "onset"), ("onset+offset F1", "onset_offset"), ("program-aware F1", "program_aware")]


def score_rows(run: Run) -> list[list[str]]:
    """Per scored model: [name, weights, F1 of each of SCORE_COLUMNS] (formatted)."""
    return [[r.display_name, r.transcription.weights] + [f"{run.scores[r.model_id][k]['f1']:.3f}"
                                                         for _, k in SCORE_COLUMNS]
            for r in run.ok_results if r.model_id in run.scores]


def scores_text(run: Run) -> list[str]:
    """The scores as a small fixed-width table for a terminal (``compare``); empty without a reference."""
    rows = score_rows(run)
    if not rows:
        return []
    table = [["model", "weights"] + [h for h, _ in SCORE_COLUMNS]] + rows
    widths = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
    lines = [f"Scores against {run.reference_name or 'the reference'} (mir_eval, 50 ms onset tolerance):"]
    for row in table:
        lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
    return lines


def summary_markdown(run: Run) -> str:
    name = run.clip.path.name if run.clip.path else "clip"
    lines = [f"# Transcription comparison — {name}", ""]
    warning = test_weights_warning(run.results)
    if warning:
        lines += [f"**{warning}**", ""]
    lines += [f"Audio: {run.clip.duration:.2f} s", "",
              "| " + " | ".join(h for _, h in SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    for r in run.results:
        row = summary_row(r)
        lines.append("| " + " | ".join(str(row.get(k, "")) for k, _ in SUMMARY_COLUMNS) + " |")
    rows = score_rows(run)
    if rows:
        lines += ["", "Scores against the reference (F1, mir_eval: 50 ms onset tolerance):", "",
                  "| model | weights | " + " | ".join(h for h, _ in SCORE_COLUMNS) + " |",
                  "|" + "---|" * (2 + len(SCORE_COLUMNS))]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    instruments = instrument_lines(run, markdown=True)
    if instruments:
        lines += ["", *instruments]
    return "\n".join(lines) + "\n"


def _listed(entries: list[dict]) -> str:
    return ", ".join(f"{e['name']} ({e['notes']})" for e in entries) or "—"


def instrument_lines(run: Run, markdown: bool) -> list[str]:
    """The instrument-leakage view (``analyses["instruments"]``) as a Markdown table for
    summary.md, or as one plain line per model for the CLI. Empty when no model has it."""
    rows = [(r, r.analyses["instruments"]) for r in run.ok_results if "instruments" in r.analyses]
    if not rows:
        return []
    with_ref = any("detection" in m for _, m in rows)
    out = []
    if markdown:
        out += ["Instruments (MR-MT3's leakage measures; drums count as their own instrument):", ""]
        out += (["| model | instruments | reference | detection P / R / F1 | family F1 | leaked | missed |",
                 "|---|---|---|---|---|---|---|"] if with_ref else ["| model | instruments |", "|---|---|"])
    for r, m in rows:
        if "detection" not in m:
            out.append(f"| {r.display_name} | {m['count']} |" if markdown else f"{r.model_id}: {m['count']} instruments")
            continue
        d = m["detection"]
        prf = f"{d['precision']:.2f} / {d['recall']:.2f} / {d['f1']:.2f}"
        family, leaked, missed = m["family_detection"]["f1"], _listed(m["leaked"]), _listed(m["missed"])
        out.append(f"| {r.display_name} | {m['count']} | {m['reference_count']} | {prf} | {family:.2f} | {leaked} | "
                   f"{missed} |" if markdown else
                   f"{r.model_id}: {m['count']} instruments (reference {m['reference_count']}), detection P/R/F1 "
                   f"{prf}, family F1 {family:.2f}; leaked: {leaked}; missed: {missed}")
    return out


def write_diff_pngs(run: Run, out_dir: Path) -> dict[str, Path]:
    """``<model>_diff.png`` per transcribed model against the reference (flat onset matching, the
    "onset" score's); stored in each result's files as "diff_png". None without a reference."""
    if run.reference is None:
        return {}
    out = {}
    for r in run.ok_results:
        notes = r.transcription.notes
        fig = pianoroll.render_diff(notes, run.reference, metrics.note_diff(notes, run.reference, "onset"),
                                    run.clip.duration, title=r.display_name)
        path = out_dir / MODEL_FILES["diff_png"].format(stem=safe_name(r.model_id))
        out[r.model_id] = r.files["diff_png"] = pianoroll.save_figure(fig, path)
    return out


def write_run(run: Run, out_dir: Path, include_tokens: bool = False) -> dict[str, Path]:
    """``results.json``, ``summary.md``, ``agreement.png`` (two models or more) and the report zip
    of this run's MIDI/PNG files and those. Returns them by kind; also stored in ``run.files``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_diff_pngs(run, out_dir)  # before results.json, which names each model's files
    stem = safe_name(run.clip.path.stem if run.clip.path else "clip")
    name = {kind: out_dir / pattern.format(stem=stem) for kind, pattern in RUN_FILES.items()}
    files = {"results_json": name["results_json"], "summary_md": name["summary_md"]}
    files["results_json"].write_text(json.dumps(run_json(run, include_tokens), indent=2))
    files["summary_md"].write_text(summary_markdown(run))
    if len(run.agreement_ids) > 1:  # how much the models agree, as a picture for the bundle
        files["agreement_png"] = pianoroll.save_figure(
            pianoroll.agreement_heatmap(run.agreement_ids, run.agreement), name["agreement_png"])
    files["zip"] = name["zip"]
    # Only this run's files (nothing else that may sit in the folder); audio stays out to keep it small.
    bundle = [r.files[k] for r in run.ok_results for k in ("midi", "png", "diff_png") if k in r.files]
    bundle += [files[k] for k in ("agreement_png", "results_json", "summary_md") if k in files]
    with zipfile.ZipFile(files["zip"], "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in bundle:
            zf.write(p, arcname=f"{stem}/{p.name}")
        for r in run.ok_results:  # stems unpacked: stems/<model>/<program>_<name>.mid
            if "stems" in r.files:
                with zipfile.ZipFile(r.files["stems"]) as sz:
                    for name in sz.namelist():
                        zf.writestr(f"{stem}/stems/{safe_name(r.model_id)}/{name}", sz.read(name))
    run.files.update(files)
    return files
