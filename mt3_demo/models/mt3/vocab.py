"""MT3's 1536-id vocabulary: 3 special ids, the event codec, T5 extra ids, padding rows (mt3.md §8–9).

model id = codec index + 3. Codec (100 steps/s, shifts up to 10 s, 1 velocity bin), ranges in order:
shift 0–1000 · pitch 0–127 · velocity 0–1 · tie · program 0–127 · drum 0–127 → 1388 classes.
"""
from __future__ import annotations

import enum

from typing import NamedTuple, Sequence

PAD, EOS, UNK = 0, 1, 2  # PAD is also the decoder start token
NUM_SPECIAL = 3
STEPS_PER_SECOND = 100
MAX_SHIFT_STEPS = 1000  # 10 s
NUM_VELOCITY_BINS = 1
MAX_VELOCITY = 127

EVENT_RANGES: tuple[tuple[str, int, int], ...] = (
    ("shift", 0, MAX_SHIFT_STEPS),
    ("pitch", 0, 127),
    ("velocity", 0, NUM_VELOCITY_BINS),
    ("tie", 0, 0),
    ("program", 0, 127),
    ("drum", 0, 127),
)
NUM_CLASSES = sum(hi - lo + 1 for _, lo, hi in EVENT_RANGES)  # 1388
NUM_EXTRA_IDS = 100
VOCAB_SIZE = 128 * -(-(NUM_CLASSES + NUM_SPECIAL + NUM_EXTRA_IDS) // 128)  # 1536

# Magenta's trimming marks: EOS and ids that are no codec class.
_END, _INVALID = -1, -2


class Event(NamedTuple):
    type: str
    value: int


def _offsets() -> dict[str, tuple[int, int, int]]:
    out, start = {}, 0
    for name, lo, hi in EVENT_RANGES:
        out[name] = (start, lo, hi)
        start += hi - lo + 1
    return out


_RANGES = _offsets()


def event_index(type: str, value: int) -> int:
    """Codec index of an event; ValueError if out of range."""
    start, lo, hi = _RANGES[type]
    if not lo <= value <= hi:
        raise ValueError(f"{type} value {value} outside {lo}..{hi}")
    return start + value - lo


def event_id(type: str, value: int = 0) -> int:
    """Model id of an event."""
    return event_index(type, value) + NUM_SPECIAL


def decode_index(index: int) -> Event | None:
    """Codec index → Event, or None when it is no codec class (an invalid token)."""
    if not 0 <= index < NUM_CLASSES:
        return None
    for name, (start, lo, hi) in _RANGES.items():
        if index < start + hi - lo + 1:
            return Event(name, lo + index - start)
    return None  # unreachable


def velocity_from_bin(b: int) -> int:
    """Bin 0 is note-off (0); bin b → int(127·b/bins)."""
    return 0 if b == 0 else int(MAX_VELOCITY * b / NUM_VELOCITY_BINS)


def trim_magenta(ids: Sequence[int]) -> list[int]:
    """Generated ids (no start token) → codec indices, Magenta's rule (the default).

    Cut at the first EOS if there is one (a length-limited segment is kept whole); ids that are no
    codec class (PAD, UNK, extra ids, padding rows) become −2, decoded as invalid events.
    """
    out = []
    for i in ids:
        if i == EOS:
            break
        out.append(i - NUM_SPECIAL if NUM_SPECIAL <= i < NUM_SPECIAL + NUM_CLASSES else _INVALID)
    return out


def trim_kunato(ids: Sequence[int]) -> list[int]:
    """kunato's rule (compat): cut at the first EOS *or UNK*; a segment with neither is dropped."""
    out = []
    for i in ids:
        if i in (EOS, UNK):
            return out
        out.append(i - NUM_SPECIAL)
    return []  # no end marker: numpy argmax found index 0


def describe(token_id: int) -> str:
    """Readable form of a model id (``s:50``, ``p:60``, ``prog:33``, ``tie``, ``EOS``…), for debugging."""
    special = {PAD: "PAD", EOS: "EOS", UNK: "UNK"}
    if token_id in special:
        return special[token_id]
    ev = decode_index(token_id - NUM_SPECIAL)
    if ev is None:
        return f"id:{token_id}"
    short = {"shift": "s", "pitch": "p", "velocity": "v", "program": "prog", "drum": "d"}
    return "tie" if ev.type == "tie" else f"{short[ev.type]}:{ev.value}"


class Trim(enum.Enum):
    """A trimming rule (``options.TRIM_MODES``) as a value that carries its function:
    ``Trim("kunato")(ids)``. Chosen once, when a run's options are settled."""

    MAGENTA = "magenta"
    KUNATO = "kunato"

    def __call__(self, ids: Sequence[int]) -> list[int]:
        return trim_magenta(ids) if self is Trim.MAGENTA else trim_kunato(ids)
