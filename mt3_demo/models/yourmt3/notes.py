"""YourMT3+ tokens → notes (docs/models.md#yourmt3-tokens-to-notes): per segment, merged across segments per channel,
then the 13 channels mixed, then mapped to the shared :class:`mt3_demo.notes.Note`.

Faithful to upstream's post-processing, error counters included (they name the malformed token
streams a model produced; tests compare them). Times are float64 seconds computed as upstream does:
tick/100 inside a segment, and the *unrounded* segment start (32767·k/16000) for the note-offs the
merge forces at a segment boundary (an upstream quirk, kept).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Sequence

from ...notes import Note
from .tokenizer import (DRUM_PROGRAM, NUM_CHANNELS, SINGING_LABEL, STEPS_PER_SECOND, decode_id,
                        midi_program)

MIN_DURATION = 0.01  # drums last 10 ms; unterminated and too-short notes get 10 ms
MAX_DURATION = 10.0  # longer notes are cut to 10 ms ("Err/long note > 10s")


class NoteEvent(NamedTuple):
    """An onset (velocity 1) or offset (velocity 0) at ``time`` seconds; drums: program 128."""

    is_drum: bool
    program: int
    time: float
    velocity: int
    pitch: int


@dataclass
class RawNote:
    """A note as upstream represents it: program 128 = drums, binary velocity. Mutable on purpose:
    the fix-up passes below edit offsets in place, in upstream's order."""

    is_drum: bool
    program: int
    onset: float
    offset: float
    pitch: int
    velocity: int = 1

    def to_dict(self) -> dict:
        return {"onset": self.onset, "offset": self.offset, "pitch": self.pitch, "program": self.program,
                "is_drum": self.is_drum, "velocity": self.velocity}


# ------------------------------------------------------------------------------------------------
# One segment of one channel


def decode_segment(ids: Iterable[int], start_time: float, errors: Counter
                   ) -> tuple[list[NoteEvent], list[tuple[int, int]], list[tuple[int, int]]]:
    """Ids of one channel in one segment → (note events, tie notes (program, pitch), last activity).

    ``last_activity`` lists the (program, pitch) still sounding at the end of the segment. Malformed
    events are counted in ``errors`` and skipped; a segment without a tie section yields nothing.
    """
    events = [decode_id(int(t)) for t in ids]

    # 1. Tie section: notes already sounding when the segment starts, ended by the tie token.
    program = None
    ties: list[tuple[int, int]] = []
    active: list[tuple[int, int]] = []  # a list, not a set: duplicates count, as upstream
    tie_index = None
    for i, e in enumerate(events):
        if e.type == "tie":
            tie_index = i
            break
        if e.type == "shift":
            break
        if e.type == "program":
            program = e.value
        elif e.type == "pitch":
            if program is None:
                errors["Err/Missing prg in tie"] += 1
                continue
            ties.append((program, e.value))
            active.append((program, e.value))
    if tie_index is None:
        errors["Err/Missing tie"] += 1
        return [], [], []

    # 2. Main events; the program state carries over from the tie section, velocity does not.
    out: list[NoteEvent] = []
    velocity = None
    start_tick = round(start_time * STEPS_PER_SECOND)  # Python round: 2.0479375 s → 205
    tick = start_tick
    for e in events[tie_index + 1:]:
        if e.type == "shift":
            if e.value <= 0 or e.value > 1000:  # shift 0 is an error: time stays where it was
                errors["Err/Shift out of range"] += 1
                continue
            tick = start_tick + e.value  # absolute offset from the segment start, not cumulative
        elif e.type == "drum":
            out.append(NoteEvent(True, DRUM_PROGRAM, tick / STEPS_PER_SECOND, 1, e.value))
        elif e.type == "program":
            program = e.value
        elif e.type == "velocity":
            velocity = e.value
        elif e.type == "pitch":
            if program is None:
                errors["Err/Missing prg"] += 1
                continue
            if velocity is None:
                errors["Err/Missing vel"] += 1
                continue
            if velocity > 0:
                active.append((program, e.value))
            elif (program, e.value) in active:
                active.remove((program, e.value))
            else:
                errors["Err/Note off without note on"] += 1
                continue
            out.append(NoteEvent(False, program, tick / STEPS_PER_SECOND, velocity, e.value))
        elif e.type == "EOS":
            break
        elif e.type in ("PAD", "UNK"):
            continue
        elif e.type == "tie":
            errors["Err/Multi-tie type 1" if tick == start_tick else "Err/Multi-tie type 2"] += 1

    out.sort(key=lambda n: (n.time, n.is_drum, n.program, n.velocity, n.pitch))
    ties.sort()  # (program, pitch); all tie notes are pitched
    return out, ties, active


# ------------------------------------------------------------------------------------------------
# Note events → notes, fix-ups


def validate_notes(notes: list[RawNote]) -> list[RawNote]:
    """In place: onset > offset → offset = max(offset, onset + 10 ms); pitched notes shorter than
    10 ms → onset + 10 ms."""
    for n in notes:
        if n.onset > n.offset:
            n.offset = max(n.offset, n.onset + MIN_DURATION)
        elif n.is_drum is False and n.offset - n.onset < MIN_DURATION:
            n.offset = n.onset + MIN_DURATION
    return notes


def trim_overlapping_notes(notes: list[RawNote]) -> list[RawNote]:
    """Per (pitch, program, is_drum): cut an offset that runs past the next onset to that onset; drop
    notes left with zero or negative length. Result sorted by (onset, is_drum, program, velocity, pitch)."""
    if len(notes) <= 1:
        return notes
    groups: dict[tuple, list[RawNote]] = {}
    for n in notes:
        groups.setdefault((n.pitch, n.program, n.is_drum), []).append(n)
    out: list[RawNote] = []
    for group in groups.values():
        group = sorted(group, key=lambda n: n.onset)
        for prev, nxt in zip(group, group[1:]):
            if prev.offset > nxt.onset:
                prev.offset = nxt.onset
        out.extend(n for n in group if n.onset < n.offset)
    out.sort(key=lambda n: (n.onset, n.is_drum, n.program, n.velocity, n.pitch))
    return out


def note_events_to_notes(events: list[NoteEvent], errors: Counter) -> list[RawNote]:
    """Pair onsets with offsets per (pitch, program); drums become 10 ms notes."""
    events = sorted(events, key=lambda e: (e.time, e.is_drum, e.pitch, e.velocity, e.program))
    notes: list[RawNote] = []
    open_: dict[tuple[int, int], NoteEvent] = {}  # insertion order matters for equal sort keys
    for e in events:
        if e.is_drum:
            if e.velocity == 1:
                notes.append(RawNote(True, DRUM_PROGRAM, e.time, e.time + MIN_DURATION, e.pitch, 1))
        elif e.velocity == 1:
            prev = open_.pop((e.pitch, e.program), None)
            if prev is not None:  # re-onset closes the sounding note
                notes.append(RawNote(False, prev.program, prev.time, e.time, prev.pitch, prev.velocity))
            open_[(e.pitch, e.program)] = e
        elif e.velocity == 0:
            prev = open_.pop((e.pitch, e.program), None)
            if prev is None:
                errors["Err/onset not found"] += 1
            else:
                notes.append(RawNote(False, prev.program, prev.time, e.time, prev.pitch, prev.velocity))
    for e in open_.values():  # never closed: 10 ms
        if e.velocity == 1:
            notes.append(RawNote(False, e.program, e.time, e.time + MIN_DURATION, e.pitch, 1))
    for n in notes:
        if n.offset - n.onset > MAX_DURATION:
            n.offset = n.onset + MIN_DURATION
            errors["Err/long note > 10s"] += 1
    notes.sort(key=lambda n: (n.onset, n.is_drum, n.program, n.velocity, n.pitch))
    return trim_overlapping_notes(validate_notes(notes))


def merge_segments(segments: Sequence[tuple[list[NoteEvent], list[tuple[int, int]], list[tuple[int, int]], float]],
                   errors: Counter) -> list[RawNote]:
    """(note events, ties, last activity, start time) per segment, in order → one channel's notes.

    A note sounding at the end of a segment but missing from the next segment's tie list gets a
    note-off at the next segment's *unrounded* start time (upstream quirk, "Err/merging segment tie").
    Tied notes simply stay open until their later note-off.
    """
    merged: list[NoteEvent] = []
    prev_active = None
    for events, ties, active, start in segments:
        if prev_active is not None:
            tied = set(ties)
            for program, pitch in prev_active:
                if (program, pitch) not in tied:
                    merged.append(NoteEvent(False, program, start, 0, pitch))
                    errors["Err/merging segment tie"] += 1
        merged += events
        prev_active = active
    return note_events_to_notes(merged, errors)


def mix_notes(per_channel: Iterable[list[RawNote]]) -> list[RawNote]:
    """Concatenate channels, sort, trim overlaps across channels, validate again."""
    notes = [n for ch in per_channel for n in ch]
    notes.sort(key=lambda n: (n.onset, n.is_drum, n.program, n.velocity, n.pitch, n.offset))
    return validate_notes(trim_overlapping_notes(notes))


# ------------------------------------------------------------------------------------------------
# The whole clip


@dataclass
class Decoded:
    """Notes of a clip: mixed, per channel (sharing the mixed objects), and error counters per channel."""

    notes: list[RawNote]
    per_channel: list[list[RawNote]]
    event_errors: list[Counter] = field(default_factory=list)  # from detokenising, per channel
    note_errors: list[Counter] = field(default_factory=list)  # from merging/pairing, per channel

    def errors(self) -> dict[str, int]:
        """All counters, keyed "ch{c}/Err/…" (only non-zero ones)."""
        out: dict[str, int] = {}
        for c, (ev, ne) in enumerate(zip(self.event_errors, self.note_errors)):
            for k, v in (ev + ne).items():
                out[f"ch{c}/{k}"] = v
        return out


def decode_tokens(tokens: Sequence[Sequence[Sequence[int]]], start_times: Sequence[float]) -> Decoded:
    """tokens[segment][channel] = ids (any length; PAD after EOS is harmless) → :class:`Decoded`."""
    if len(tokens) != len(start_times):
        raise ValueError(f"{len(tokens)} segments of tokens but {len(start_times)} start times")
    n_ch = len(tokens[0]) if tokens else NUM_CHANNELS
    per_channel, event_errors, note_errors = [], [], []
    for c in range(n_ch):
        ev_err, note_err = Counter(), Counter()
        segs = []
        for seg, start in zip(tokens, start_times):
            events, ties, active = decode_segment(seg[c], start, ev_err)
            segs.append((events, ties, active, start))
        per_channel.append(merge_segments(segs, note_err))
        event_errors.append(ev_err)
        note_errors.append(note_err)
    # Upstream mixes the very same note objects, so offsets trimmed across channels show in
    # ``per_channel`` too (its fixtures record them that way).
    notes = mix_notes(per_channel)
    return Decoded(notes, per_channel, event_errors, note_errors)


def to_shared_notes(notes: Iterable[RawNote], velocity: int = 100) -> list[Note]:
    """Upstream notes → shared :class:`Note` with the programs upstream writes to MIDI.

    Drums: ``is_drum`` (program 0 in the note, channel 10 in MIDI). Singing (100, 101) has no GM
    program: written as 65 / 53 like upstream, labelled so the UI says "Singing Voice". Velocity is
    binary in the model; MIDI gets upstream's fixed ``velocity=100``.
    """
    out = []
    for n in notes:
        if n.is_drum:
            out.append(Note(n.onset, n.offset, n.pitch, velocity, 0, True))
        else:
            out.append(Note(n.onset, n.offset, n.pitch, velocity, midi_program(n.program), False,
                            SINGING_LABEL.get(n.program)))
    return out
