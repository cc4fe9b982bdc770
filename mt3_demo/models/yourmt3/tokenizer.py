"""YourMT3+'s token vocabulary (task ``mc13_full_plus_256``, codec 'mt3'; docs/models.md#yourmt3-vocabulary) and the
program tables used to write its notes.

596 ids; the special tokens are part of the codec (no offset table):

    0 PAD (also the decoder start)   1 EOS   2 UNK
    3..208    shift 0..205 (10 ms steps, absolute offset from the segment start)
    209..336  pitch 0..127           337..338 velocity 0 (off) / 1 (on)    339 tie
    340..467  program 0..127         468..595 drum pitch 0..127
"""
from __future__ import annotations

from typing import NamedTuple

VOCAB_SIZE = 596
STEPS_PER_SECOND = 100
MAX_SHIFT_STEPS = 206  # (32767/16000) // 0.01 + 2, what the Space computes
NUM_CHANNELS = 13
MAX_TOKENS_PER_CHANNEL = 256  # "mc13_256"

# (event type, first id, number of values), in id order.
_RANGES = [
    ("PAD", 0, 1), ("EOS", 1, 1), ("UNK", 2, 1),
    ("shift", 3, MAX_SHIFT_STEPS), ("pitch", 209, 128), ("velocity", 337, 2), ("tie", 339, 1),
    ("program", 340, 128), ("drum", 468, 128),
]


class Event(NamedTuple):
    type: str
    value: int


def decode_id(token: int) -> Event:
    """One id → (type, value). Ids outside the vocabulary raise ValueError."""
    for kind, first, count in _RANGES:
        if first <= token < first + count:
            return Event(kind, token - first)
    raise ValueError(f"token id {token} outside the YourMT3 vocabulary (0..{VOCAB_SIZE - 1})")


def encode_event(kind: str, value: int = 0) -> int:
    """(type, value) → id (for tests and hand-written token streams)."""
    for k, first, count in _RANGES:
        if k == kind:
            if not 0 <= value < count:
                raise ValueError(f"{kind} value {value} out of range 0..{count - 1}")
            return first + value
    raise ValueError(f"unknown event type {kind!r}")


# Decoder channel → instrument group it was trained on (preset ``gm_plus``; drums = 12). The channel
# only conditions the decoder through its memory; the program written comes from program tokens.
CHANNEL_NAMES = [
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Brass", "Reed", "Pipe",
    "Synth Lead", "Synth Pad", "Singing Voice", "Drums",
]

DRUM_PROGRAM = 128  # upstream's internal program of drum notes
SINGING_PROGRAM, CHORUS_PROGRAM = 100, 101

# MIDI output programs (upstream writes through preset ``gm_ext_plus``): each decoded program maps to
# the first program of its class. Programs in no class (96..99, 102..127) are written as they are.
_GM_EXT_PLUS = [
    ("Acoustic Piano", [0, 1, 3, 6, 7]),
    ("Electric Piano", [2, 4, 5]),
    ("Chromatic Percussion", list(range(8, 16))),
    ("Organ", list(range(16, 24))),
    ("Guitar (clean)", list(range(24, 28))),
    ("Guitar (distortion)", [30, 28, 29, 31]),
    ("Bass", [33, 32, 34, 35, 36, 37, 38, 39]),
    ("Strings", [48] + [p for p in range(40, 56) if p != 48]),
    ("Brass", list(range(56, 64))),
    ("Reed", list(range(64, 72))),
    ("Pipe", list(range(72, 80))),
    ("Synth Lead", list(range(80, 88))),
    ("Synth Pad", list(range(88, 96))),
    ("Singing Voice", [SINGING_PROGRAM]),
    ("Singing Voice (chorus)", [CHORUS_PROGRAM]),
]
OUTPUT_PROGRAM = {p: programs[0] for _, programs in _GM_EXT_PLUS for p in programs}
OUTPUT_CLASS = {p: name for name, programs in _GM_EXT_PLUS for p in programs}

# Singing has no General MIDI program: upstream's MIDI writer uses Alto Sax (65) for the solo voice and
# Voice Oohs (53) for the chorus. We write the same programs and label the notes, so people see
# "Singing Voice" rather than the GM name of 100/101 (sound effects) or of a saxophone.
SINGING_MIDI_PROGRAM = {SINGING_PROGRAM: 65, CHORUS_PROGRAM: 53}
SINGING_LABEL = {SINGING_PROGRAM: "Singing Voice", CHORUS_PROGRAM: "Singing Voice (chorus)"}


def midi_program(program: int) -> int:
    """The program written to MIDI for a decoded (non-drum) program."""
    if program in SINGING_MIDI_PROGRAM:
        return SINGING_MIDI_PROGRAM[program]
    return OUTPUT_PROGRAM.get(program, program)
