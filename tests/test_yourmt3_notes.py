"""YourMT3+ vocabulary, segmenting, tokens → notes and the programs written to MIDI.

Golden cases: tokens_to_notes.json of both fixture sets (upstream post-processing of hand-written
and random token streams), and set B's MIDI files (upstream's writer) for the program mapping.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest

from mt3_demo.models.yourmt3.features import (SEGMENT_SAMPLES, num_segments, segment_audio,
                                              segment_start_times)
from mt3_demo.models.yourmt3.notes import decode_segment, decode_tokens, to_shared_notes
from mt3_demo.models.yourmt3.tokenizer import VOCAB_SIZE, decode_id, encode_event, midi_program

FIX = Path(__file__).parent / "fixtures" / "yourmt3"
SET_B_CASES = json.loads((FIX / "set_b" / "tokens_to_notes.json").read_text())


def same_notes(ours, golden) -> bool:
    if len(ours) != len(golden):
        return False
    for a, b in zip(ours, golden):
        a = a.to_dict()
        if (a["pitch"], a["program"], a["is_drum"], a["velocity"]) != (b["pitch"], b["program"], b["is_drum"], b["velocity"]):
            return False
        if abs(a["onset"] - b["onset"]) > 1e-9 or abs(a["offset"] - b["offset"]) > 1e-9:
            return False
    return True


def test_vocabulary_layout():
    assert [decode_id(i) for i in (0, 1, 2)] == [("PAD", 0), ("EOS", 0), ("UNK", 0)]
    assert decode_id(3) == ("shift", 0) and decode_id(208) == ("shift", 205)
    assert decode_id(209) == ("pitch", 0) and decode_id(336) == ("pitch", 127)
    assert decode_id(337) == ("velocity", 0) and decode_id(338) == ("velocity", 1)
    assert decode_id(339) == ("tie", 0)
    assert decode_id(340) == ("program", 0) and decode_id(467) == ("program", 127)
    assert decode_id(468) == ("drum", 0) and decode_id(595) == ("drum", 127)
    assert all(encode_event(*decode_id(i)) == i for i in range(VOCAB_SIZE))
    with pytest.raises(ValueError):
        decode_id(VOCAB_SIZE)


def test_segmenting_is_ceil_of_32767():
    assert [num_segments(n) for n in (1, 32767, 32768, 65534, 65535)] == [1, 1, 2, 2, 3]
    x = np.arange(40000, dtype=np.float32)
    seg = segment_audio(x)
    assert seg.shape == (2, SEGMENT_SAMPLES) and seg[1, 40000 - SEGMENT_SAMPLES:].sum() == 0
    assert np.array_equal(seg.reshape(-1)[:40000], x)
    assert segment_start_times(3) == [0.0, 32767 / 16000, 2 * 32767 / 16000]


def test_tokens_to_notes_set_a():
    case = json.loads((FIX / "set_a" / "tokens_to_notes.json").read_text())
    d = decode_tokens(case["tokens"], case["start_secs"])
    assert same_notes(d.notes, case["notes"])
    assert all(same_notes(o, g) for o, g in zip(d.per_channel, case["notes_per_channel"]))
    assert d.errors() == {k: int(v) for k, v in case["errors"].items()}


@pytest.mark.parametrize("case", SET_B_CASES, ids=[c["name"] for c in SET_B_CASES])
def test_tokens_to_notes_set_b(case):
    d = decode_tokens(case["tokens"], case["segment_start_times"])
    assert same_notes(d.notes, case["notes"])
    # upstream's per-channel lists share the note objects the mix trims (same here)
    assert all(same_notes(o, g) for o, g in zip(d.per_channel, case["notes_per_channel"]))
    assert dict(sum(d.event_errors, Counter())) == case["event_errors"]
    assert dict(sum(d.note_errors, Counter())) == case["note_errors"]


def midi_tracks(path: Path) -> Counter:
    """(program written, is_drum, track name) → note count, per track of an upstream MIDI file."""
    out = Counter()
    for track in mido.MidiFile(path).tracks:
        notes = [m for m in track if m.type == "note_on" and m.velocity > 0]
        if not notes:
            continue
        name = next(m.name for m in track if m.type == "track_name")
        program = next(m.program for m in track if m.type == "program_change")
        out[(program, notes[0].channel == 9, name)] += len(notes)
    return out


@pytest.mark.parametrize("case", SET_B_CASES, ids=[c["name"] for c in SET_B_CASES])
def test_midi_programs_match_upstream_writer(case):
    """Programs (gm_ext_plus map; singing 100 → 65, chorus 101 → 53; drums on channel 10) and note
    counts per instrument equal those of upstream's MIDI file."""
    notes = to_shared_notes(decode_tokens(case["tokens"], case["segment_start_times"]).notes)
    ours = Counter()
    for n in notes:
        ours[(0 if n.is_drum else n.program, n.is_drum, n.label)] += 1
    theirs = midi_tracks(FIX / "set_b" / case["midi_file"])
    assert sorted((p, d, c) for (p, d, _), c in theirs.items()) == sorted((p, d, c) for (p, d, _), c in ours.items())
    for (p, d, name), _ in theirs.items():
        if name.startswith("Singing Voice"):
            assert (p, d, name) in ours  # labelled as singing, not as Alto Sax / Voice Oohs
    assert all(n.velocity == 100 for n in notes)


def test_program_map_examples():
    assert [midi_program(p) for p in (1, 2, 5, 29, 33, 41, 55, 100, 101, 97, 127)] == \
        [0, 2, 2, 30, 33, 48, 48, 65, 53, 97, 127]


def test_segment_quirks():
    """A segment without a tie section yields nothing; shift 0 is an error; start tick is rounded."""
    errors = Counter()
    assert decode_segment([encode_event("shift", 5), encode_event("tie")], 0.0, errors) == ([], [], [])
    assert errors == {"Err/Missing tie": 1}
    errors = Counter()
    ids = [encode_event("tie"), encode_event("shift", 0), encode_event("program", 0),
           encode_event("velocity", 1), encode_event("pitch", 60), encode_event("EOS"), encode_event("pitch", 61)]
    events, ties, active = decode_segment(ids, 2.0479375, errors)
    assert errors == {"Err/Shift out of range": 1}
    assert [(e.time, e.pitch) for e in events] == [(2.05, 60)] and active == [(0, 60)] and ties == []
