"""Stems: one MIDI file per instrument of a transcription, zipped, each playable on its own.

An instrument here is a General MIDI program, or the drum kit (as in :mod:`mt3_demo.leakage`).
Every stem goes through the project's one MIDI writer, :func:`mt3_demo.notes.write_midi`, so a stem
is byte-for-byte what the full MIDI file would hold for that instrument's track.
"""
from __future__ import annotations

import re
import tempfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from .instruments import instrument_name
from .notes import Note, write_midi


def _safe(name: str) -> str:
    """A file-name-safe version of an instrument name: 'Acoustic Guitar (steel)' → 'Acoustic_Guitar_steel'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "instrument"


def stem_groups(notes: Iterable[Note]) -> dict[str, list[Note]]:
    """``{file name: notes}``, one entry per program (``"000_Acoustic_Grand_Piano.mid"``, the GM
    number zero-padded so files sort by program) and one for the drums (``"drums_Drums.mid"``).
    A program's file is named after its most common label when it has one (e.g. 'Singing Voice')."""
    by_program: dict[int | None, list[Note]] = defaultdict(list)
    for n in notes:
        by_program[None if n.is_drum else int(n.program)].append(n)
    out = {}
    for program in sorted(by_program, key=lambda p: 128 if p is None else p):
        group = by_program[program]
        if program is None:
            out["drums_Drums.mid"] = group
            continue
        label = Counter(n.label for n in group).most_common(1)[0][0]
        out[f"{program:03d}_{_safe(instrument_name(program, False, label))}.mid"] = group
    return out


def write_stems_zip(notes: Iterable[Note], path: str | Path, end_time: float | None = None,
                    folder: str = "") -> Path:
    """Write a zip of stem MIDI files (see :func:`stem_groups`) to ``path``; returns the path.

    ``end_time`` pins every stem to the clip length (as for the full MIDI), so stems dropped into a
    DAW line up. ``folder`` optionally puts the files under a directory inside the zip (e.g. the
    model id). A transcription without notes gives an empty zip.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, group in stem_groups(notes).items():
            midi_path = write_midi(group, Path(tmp) / name, end_time=end_time)
            zf.write(midi_path, f"{folder.strip('/')}/{name}" if folder else name)
    return path
