"""General MIDI knowledge: instrument names, the 16 families, drum kinds, one key per instrument.

Everything that groups notes by instrument — MIDI tracks, piano-roll legends and colours, the
per-instrument breakdown, the synthesizer's drum sounds, scores — asks this module, so a note is
the same instrument everywhere. Functions take a note's ``program``, ``is_drum`` and ``label``
(see :class:`mt3_demo.notes.Note`); nothing here draws or writes files.
"""
from __future__ import annotations

from typing import Protocol

import pretty_midi

# The 16 General MIDI families (8 programs each), used for colours and grouping.
GM_FAMILIES = [
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
    "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive", "Sound Effects",
]
DRUMS = "Drums"

# General MIDI percussion keys grouped into the kinds people listen for. Unlisted keys → "Other".
_DRUM_KINDS: list[tuple[str, set[int]]] = [
    ("Kick", {35, 36}),
    ("Snare", {37, 38, 39, 40}),
    ("Hi-hat", {42, 44, 46}),
    ("Toms", {41, 43, 45, 47, 48, 50}),
    ("Cymbals", {49, 51, 52, 53, 55, 57, 59}),
]
OTHER_DRUMS = "Other perc."
DRUM_KIND_ORDER = [k for k, _ in _DRUM_KINDS] + [OTHER_DRUMS]


class _Instrumented(Protocol):
    program: int
    is_drum: bool
    label: str | None


def instrument_key(note: _Instrumented) -> tuple[bool, int, str | None]:
    """(is_drum, program, label): notes with the same key are one instrument (one MIDI track, one
    legend entry, one breakdown row); all drums are one kit. Sorting keys puts drums last."""
    if note.is_drum:
        return (True, 0, None)
    return (False, note.program, note.label)


def instrument_name(program: int, is_drum: bool = False, label: str | None = None) -> str:
    """Human name of an instrument: the label if given, 'Drums', or the General MIDI program name."""
    if label:
        return label
    if is_drum:
        return DRUMS
    return pretty_midi.program_to_instrument_name(int(program))


def instrument_family(program: int, is_drum: bool = False, label: str | None = None) -> str:
    """Coarse family (GM's 16 classes, plus 'Drums' and any custom label such as 'Singing Voice').

    Families drive colours, so one instrument family has the same colour in every plot.
    """
    if is_drum:
        return DRUMS
    if label:
        return label
    return GM_FAMILIES[int(program) // 8]


def note_name(note: _Instrumented) -> str:
    """The instrument name of one note."""
    return instrument_name(note.program, note.is_drum, note.label)


def drum_kind(pitch: int) -> str:
    """Kick, Snare, Hi-hat, Toms, Cymbals or Other perc. for a General MIDI percussion key."""
    for kind, keys in _DRUM_KINDS:
        if pitch in keys:
            return kind
    return OTHER_DRUMS
