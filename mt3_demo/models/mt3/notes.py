"""Codec tokens of all segments → notes, with ties across segments (mt3.md §10; Magenta's
``NoteEncodingWithTiesSpec`` decoding, which kunato copies unchanged).

One state runs across the segments in time order. Each segment starts with a *tie section* that
lists the notes still sounding from before; the ``tie`` token ends the section and every active
note that was not listed. Shifts give the absolute offset from the segment start; events after the
next segment's start are dropped. Float arithmetic is kept literally (times are compared strictly).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ...notes import Note
from . import vocab

MIN_NOTE_SECONDS = 0.01  # also the fixed length of drum hits
DEFAULT_VELOCITY = 100  # until the first velocity token


class InvalidEvent(ValueError):
    """An event the decoding rules reject; it is counted and skipped."""


@dataclass
class DecodeResult:
    notes: list[Note]  # in emission order (not sorted by onset), like Magenta's NoteSequence
    invalid_events: int = 0
    dropped_events: int = 0
    total_time: float = 0.0


@dataclass
class _State:
    current_time: float = 0.0
    current_velocity: int = DEFAULT_VELOCITY
    current_program: int = 0
    # (pitch, program) → (onset, velocity); dict order = insertion order, which decides emission order
    active: dict[tuple[int, int], tuple[float, int]] = field(default_factory=dict)
    tied: set[tuple[int, int]] = field(default_factory=set)
    in_tie_section: bool = False
    notes: list[Note] = field(default_factory=list)
    total_time: float = 0.0

    def emit(self, onset: float, offset: float, pitch: int, velocity: int, program: int,
             is_drum: bool = False) -> None:
        offset = max(offset, onset + MIN_NOTE_SECONDS)
        self.notes.append(Note(onset, offset, pitch, velocity, program, is_drum))
        self.total_time = max(self.total_time, offset)

    def end_note(self, key: tuple[int, int], time: float) -> None:
        onset, velocity = self.active.pop(key)
        self.emit(onset, time, key[0], velocity, key[1])


def _apply(state: _State, time: float, event: vocab.Event) -> None:
    """One non-shift event at ``time``; raises InvalidEvent (state changes made so far stay)."""
    if time < state.current_time:
        raise InvalidEvent("time went backwards")
    state.current_time = time
    if event.type == "pitch":
        key = (event.value, state.current_program)
        if state.in_tie_section:
            if key not in state.active or key in state.tied:
                raise InvalidEvent("tie of a note that is not sounding or already tied")
            state.tied.add(key)
        elif state.current_velocity == 0:
            if key not in state.active:
                raise InvalidEvent("note-off of a note that is not sounding")
            state.end_note(key, time)
        else:
            if key in state.active:  # re-onset: end it, then re-insert at the end of the order
                state.end_note(key, time)
            state.active[key] = (time, state.current_velocity)
    elif event.type == "drum":
        if state.current_velocity == 0:
            raise InvalidEvent("drum hit with velocity 0")
        state.emit(time, time + MIN_NOTE_SECONDS, event.value, state.current_velocity, 0, is_drum=True)
    elif event.type == "velocity":
        state.current_velocity = vocab.velocity_from_bin(event.value)
    elif event.type == "program":
        state.current_program = event.value
    elif event.type == "tie":
        if not state.in_tie_section:
            raise InvalidEvent("tie outside a tie section")
        for key in [k for k in state.active if k not in state.tied]:
            state.end_note(key, state.current_time)
        state.in_tie_section = False
    else:
        raise InvalidEvent(f"unexpected event {event.type}")


def _decode_segment(state: _State, tokens: Sequence[int], start: float,
                    max_time: float | None) -> tuple[int, int]:
    """Walk one segment's codec tokens; returns (invalid, dropped) counts."""
    invalid = dropped = 0
    steps, time = 0, start
    for i, token in enumerate(tokens):
        event = vocab.decode_index(token)
        if event is None:
            invalid += 1
            continue
        if event.type == "shift":
            steps += event.value
            time = start + steps / vocab.STEPS_PER_SECOND
            if max_time and time > max_time:
                dropped = len(tokens) - i
                break
        else:
            steps = 0
            try:
                _apply(state, time, event)
            except InvalidEvent:
                invalid += 1
    return invalid, dropped


def tokens_to_notes(segments: Sequence[Sequence[int]], start_times: Sequence[float]) -> DecodeResult:
    """Codec indices per segment (already trimmed) + each segment's start time → notes.

    Segments are decoded in start-time order with one state; still-sounding notes are ended at
    the end (the flush) at one common time.
    """
    order = sorted(range(len(segments)), key=lambda k: start_times[k])
    state = _State()
    invalid = dropped = 0
    for pos, k in enumerate(order):
        state.tied = set()
        state.in_tie_section = True
        max_time = start_times[order[pos + 1]] if pos + 1 < len(order) else None
        inv, drop = _decode_segment(state, segments[k], start_times[k], max_time)
        invalid += inv
        dropped += drop
    if state.active:
        state.current_time = max(state.current_time,
                                 max(onset + MIN_NOTE_SECONDS for onset, _ in state.active.values()))
    for key in list(state.active):
        state.end_note(key, state.current_time)
    return DecodeResult(state.notes, invalid, dropped, state.total_time)


def ids_to_notes(ids: Sequence[Sequence[int]], start_times: Sequence[float],
                 trim: vocab.Trim | str = vocab.Trim.MAGENTA) -> DecodeResult:
    """Generated model ids per segment (no start token) → notes, with Magenta's or kunato's trimming
    (a :class:`~.vocab.Trim`, or its name)."""
    rule = vocab.Trim(trim)
    return tokens_to_notes([rule(g) for g in ids], start_times)
