"""A reference MIDI in: bounded before it is read and while it is, every problem one sentence.

Anyone who can reach the page can upload a reference, so reading one must cost little whatever
its bytes say (a 1 M-note file once took a server from 1.4 to 8.6 GB through pretty_midi):

1. the file's size (``MAX_BYTES``), from the file system, before a byte is read;
2. one pass over the Standard MIDI File (:func:`read_midi`), chunk by chunk and event by event,
   that stops at the first bound passed (``MAX_TRACKS``, ``MAX_EVENTS``, ``MAX_NOTES``) or the
   first byte that is not MIDI. It keeps only the notes' ticks (a tuple each) and the tempo
   changes — no message objects, no tick-to-time table — so a file of a million notes is refused
   after reading ``MAX_NOTES`` of them, and what is accepted costs memory in proportion to its notes.

Notes are paired and timed as pretty_midi does, so a reference scores as it did before.
Every problem is a :class:`ReferenceError` with one sentence for people, naming the file by its
name (never its folder). Notes that start after the audio ends cannot be matched by anything: a
reference longer than the audio is trimmed to it (:func:`fit`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .notes import Note

# The audio is at most 10 minutes: a dense piano reference of that length has ~15 k notes and, with
# its pedal data, ~60 k events in ~0.3 MB. The bounds leave room above that and cap what a hostile
# file costs (docs/security.md): refused within 100 k events, accepted ones at most 20 k notes
# (a reference of 50 k notes took over 5 s to read on a loaded 2-core CPU: a validator must answer fast).
MAX_BYTES = 2 * 2**20
MAX_TRACKS = 512
MAX_EVENTS = 100_000  # channel, meta and sysex events over all tracks
MAX_NOTES = 20_000  # note-ons with a velocity above 0


class ReferenceError(ValueError):  # noqa: A001 - the module's one error; never the builtin's meaning
    """A reference MIDI that cannot be used. The message is one sentence for people."""


# Data bytes after a channel status (0x80–0xEF by its high nibble) and after system common /
# real-time statuses; mido refuses the statuses missing here (0xF4, 0xF5, 0xF9, 0xFD).
_CHANNEL_DATA = {0x8: 2, 0x9: 2, 0xA: 2, 0xB: 2, 0xC: 1, 0xD: 1, 0xE: 2}
_SYSTEM_DATA = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFE: 0}
DRUM_CHANNEL = 9


class _Truncated(Exception):
    """The bytes end (or a chunk ends) in the middle of something."""


class _Corrupt(Exception):
    """Bytes that no MIDI writer produces; the message says which."""


class _OverBound(Exception):
    """A bound passed; the message completes "<name> ..."."""


def _varlen(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A MIDI variable-length number (at most 4 bytes) at ``pos``: (value, position after it)."""
    value = 0
    for _ in range(4):
        if pos >= end:
            raise _Truncated
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos
    raise _Corrupt("a length or time field longer than 4 bytes")


@dataclass
class _Tally:
    """What the reading has used of the bounds, and the notes and tempo changes found so far."""

    events: int = 0
    opened: int = 0  # note-ons of a velocity above 0
    notes: list = field(default_factory=list)  # (on tick, off tick, pitch, velocity, program, channel)
    tempos: list = field(default_factory=list)  # (tick, microseconds per beat), track 0 only


def read_midi(data: bytes, name: str = "The reference MIDI") -> list[Note]:
    """Notes of a Standard MIDI File's bytes, read in one pass that stops at the first bound passed
    or the first byte that is not MIDI (:class:`ReferenceError`). Notes are paired and timed as
    pretty_midi does: a note-off closes every open note of its channel and pitch begun at an
    earlier tick, tempo changes come from the first track, unclosed notes are dropped."""
    if not data:
        raise ReferenceError(f"{name} is empty (0 bytes); upload a .mid file or leave the reference empty.")
    if data[:4] != b"MThd":
        raise ReferenceError(f"{name} is not a MIDI file (it does not start with a MIDI header); "
                             "upload a standard .mid file.")
    try:
        division, tally = _read(data)
    except _Truncated:
        raise ReferenceError(f"{name} is truncated: the file ends in the middle of its data; "
                             "export it again.") from None
    except _Corrupt as e:
        raise ReferenceError(f"{name} is not a valid MIDI file ({e}); export it again.") from None
    except _OverBound as e:
        raise ReferenceError(f"{name} {e}; give the reference of this recording only.") from None
    if not tally.notes:
        raise ReferenceError(f"{name} has no notes; give the MIDI of what is played in the recording.")
    return _notes(tally, division)


def _read(data: bytes) -> tuple[int, _Tally]:
    end = len(data)
    if end < 14:
        raise _Truncated
    header_len = int.from_bytes(data[4:8], "big")
    fmt, n_tracks, division = (int.from_bytes(data[i:i + 2], "big") for i in (8, 10, 12))
    if header_len < 6 or fmt > 2:
        raise _Corrupt(f"a header of format {fmt}, length {header_len}")
    if division == 0 or division & 0x8000:  # 0: no time at all; the top bit: SMPTE frames, which
        raise _Corrupt("its header gives no ticks per beat")  # mido reads as a negative tempo
    if n_tracks > MAX_TRACKS:
        raise _OverBound(f"has {n_tracks} tracks, more than the {MAX_TRACKS} a reference may have")
    tally = _Tally()
    pos = 8 + header_len
    for track in range(n_tracks):  # mido reads exactly as many track chunks as the header announces
        if pos + 8 > end:
            raise _Truncated
        chunk, length = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "big")
        pos += 8
        if pos + length > end:
            raise _Truncated
        if chunk != b"MTrk":
            raise _Corrupt(f"track {track + 1} does not start with a track header")
        _read_track(data, pos, pos + length, tally, tempo_track=track == 0)
        pos += length
    return division, tally


def _read_track(data: bytes, pos: int, end: int, tally: _Tally, tempo_track: bool) -> None:
    """One track chunk ``data[pos:end]``, with mido's reading rules (running status; meta events
    do not set it) and pretty_midi's note pairing."""
    tick, status = 0, None
    program = [0] * 16
    open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (channel, pitch) -> [(tick, velocity)]
    while pos < end:
        delta, pos = _varlen(data, pos, end)
        tick += delta
        if pos >= end:
            raise _Truncated
        byte = data[pos]
        if byte < 0x80:  # running status: the data bytes follow at once
            if status is None:
                raise _Corrupt("a data byte where an event should start")
        else:
            pos += 1
            if byte != 0xFF:
                status = byte
        kind = byte if byte >= 0x80 else status
        if kind == 0xFF:  # meta: type, length, data
            if pos >= end:
                raise _Truncated
            meta = data[pos]
            length, pos = _varlen(data, pos + 1, end)
            if meta == 0x51 and tempo_track:  # set tempo: 3 bytes of microseconds per beat
                if length != 3 or pos + 3 > end:
                    raise _Corrupt("a tempo change that is not 3 bytes long")
                tempo = int.from_bytes(data[pos:pos + 3], "big")
                if tempo == 0:
                    raise _Corrupt("a tempo of 0 microseconds per beat")
                tally.tempos.append((tick, tempo))
            pos += length
        elif kind in (0xF0, 0xF7):  # sysex: length, data
            length, pos = _varlen(data, pos, end)
            pos += length
        elif kind >= 0xF0:
            if kind not in _SYSTEM_DATA:
                raise _Corrupt(f"an undefined status byte 0x{kind:02X}")
            pos += _SYSTEM_DATA[kind]
        else:
            n = _CHANNEL_DATA[kind >> 4]
            if pos + n > end:
                raise _Truncated
            first, second = data[pos], data[pos + 1] if n == 2 else 0
            if (first | second) & 0x80:
                raise _Corrupt("a message with a data byte above 127")
            _channel_event(kind, first, second, tick, program, open_notes, tally)
            pos += n
        if pos > end:
            raise _Truncated
        tally.events += 1
        if tally.events > MAX_EVENTS:
            raise _OverBound(f"has more than the {MAX_EVENTS:,} MIDI events a reference may have")


def _channel_event(kind: int, first: int, second: int, tick: int, program: list[int],
                   open_notes: dict[tuple[int, int], list[tuple[int, int]]], tally: _Tally) -> None:
    """A channel message's effect: a program change, a note opened, notes closed."""
    command, channel = kind >> 4, kind & 0x0F
    if command == 0xC:
        program[channel] = first
    elif command == 0x9 and second > 0:
        tally.opened += 1
        if tally.opened > MAX_NOTES:
            raise _OverBound(f"has more than the {MAX_NOTES:,} notes a reference may have")
        open_notes.setdefault((channel, first), []).append((tick, second))
    elif command == 0x8 or command == 0x9:  # a note-off, or a note-on of velocity 0
        pitch = first
        waiting = open_notes.get((channel, pitch))
        if not waiting:
            return  # a note-off of no note: ignored, as pretty_midi does
        # Ticks only grow within a track: the notes begun before this tick are a prefix of the list.
        closed = 0
        while closed < len(waiting) and waiting[closed][0] < tick:
            start, velocity = waiting[closed]
            tally.notes.append((start, tick, pitch, velocity, program[channel], channel))
            closed += 1
        if closed and closed < len(waiting):
            del waiting[:closed]  # notes begun at this very tick stay open
        else:
            del open_notes[(channel, pitch)]  # all closed, or only zero-length ones: dropped


def _notes(tally: _Tally, division: int) -> list[Note]:
    """The paired ticks as :class:`Note` s in seconds (the tempo map of the first track, 120 bpm
    until its first change), sorted by onset and pitch."""
    import numpy as np

    changes = [(0, 500_000)]  # (tick, microseconds per beat)
    for tick, tempo in tally.tempos:
        if tick == 0:
            changes = [(0, tempo)]
        elif tempo != changes[-1][1]:
            changes.append((tick, tempo))
    at = np.array([t for t, _ in changes], dtype=np.float64)
    per_tick = np.array([tempo for _, tempo in changes], dtype=np.float64) / 1e6 / division
    seconds_at = np.concatenate([[0.0], np.cumsum(np.diff(at) * per_tick[:-1])])

    def seconds(ticks: np.ndarray) -> np.ndarray:
        i = np.searchsorted(at, ticks, side="right") - 1
        return seconds_at[i] + (ticks - at[i]) * per_tick[i]

    raw = np.array([n[:2] for n in tally.notes], dtype=np.float64)
    onsets, offsets = seconds(raw[:, 0]), seconds(raw[:, 1])
    notes = [Note(onset=float(on), offset=float(off), pitch=pitch, velocity=velocity, program=program,
                  is_drum=channel == DRUM_CHANNEL)
             for on, off, (_, _, pitch, velocity, program, channel) in zip(onsets, offsets, tally.notes)]
    notes.sort(key=lambda n: (n.onset, n.pitch))
    return notes


def read_bytes(path: str | os.PathLike, name: str | None = None) -> bytes:
    """The file's bytes, refused by its size before any is read (and never more than the bound)."""
    path = Path(path)
    name = name or f"The reference MIDI '{path.name}'"
    try:
        if not path.is_file():
            raise ReferenceError(f"{name} does not exist or is not a file.")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ReferenceError(f"{name} is {size / 2**20:.1f} MB; a reference may be at most "
                                 f"{MAX_BYTES // 2**20} MB.")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # it may have grown since: read no more than the bound
    except OSError as e:
        raise ReferenceError(f"{name} could not be opened ({e.strerror or type(e).__name__}).") from None
    if len(data) > MAX_BYTES:
        raise ReferenceError(f"{name} is over {MAX_BYTES // 2**20} MB; a reference may be at most "
                             f"{MAX_BYTES // 2**20} MB.")
    return data


def read_reference(path: str | os.PathLike) -> list[Note]:
    """A reference MIDI file's notes, every bound checked on the way (:class:`ReferenceError`)."""
    name = f"The reference MIDI '{Path(path).name}'"
    return read_midi(read_bytes(path, name), name)


def fit(notes: list[Note], duration: float, name: str) -> tuple[list[Note], str | None]:
    """The notes that start within the audio's ``duration`` seconds, and a warning saying how many
    were left out (None when none was). None left is an error: the reference of another recording.
    ``name`` is the file's name."""
    kept = [n for n in notes if n.onset < duration]
    if not kept:
        raise ReferenceError(f"The reference MIDI '{name}' has no notes in the recording's {duration:.1f} s "
                             f"(its first starts at {notes[0].onset:.1f} s); give the reference of this recording.")
    dropped = len(notes) - len(kept)
    if not dropped:
        return kept, None
    return kept, (f"The reference MIDI '{name}' goes on past the recording's end ({duration:.1f} s): its "
                  f"{dropped} later note{'s were' if dropped > 1 else ' was'} left out of the scores.")
