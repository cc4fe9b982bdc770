"""Codec, trimming and the tie-aware note decoder vs upstream (fixtures/mt3/tokens_to_notes)."""
import json
from pathlib import Path

import pytest

from mt3_demo.models.mt3 import vocab
from mt3_demo.models.mt3.notes import ids_to_notes, tokens_to_notes

FIX = Path(__file__).parent / "fixtures" / "mt3" / "tokens_to_notes"
CASES = json.loads((FIX / "cases.json").read_text())["cases"]


def as_tuples(notes):
    return [(n.onset, n.offset, n.pitch, n.velocity, n.program, n.is_drum) for n in notes]


def expected_tuples(expected):
    return [(n["onset"], n["offset"], n["pitch"], n["velocity"], n["program"], n["is_drum"])
            for n in expected["notes"]]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("trim", ["magenta", "kunato"])
def test_tokens_to_notes(case, trim):
    segs = case["segments"]
    ids = [s["raw_ids"][1:] for s in segs]  # generated ids without the start token
    trim_fn = vocab.trim_magenta if trim == "magenta" else vocab.trim_kunato
    assert [trim_fn(g) for g in ids] == [s[f"{trim}_codec_tokens"] for s in segs]
    expected = case["expected_magenta_trim" if trim == "magenta" else "expected"]
    got = ids_to_notes(ids, [s["start_time"] for s in segs], trim=trim)
    # exact float equality: the decoder must reproduce upstream's float64 arithmetic literally
    assert as_tuples(got.notes) == expected_tuples(expected)
    assert got.invalid_events == expected["invalid_events"]
    assert got.dropped_events == expected["dropped_events"]
    assert got.total_time == expected["total_time"]


def test_readable_tokens_match_ids():
    for case in CASES:
        for s in case["segments"]:
            assert [vocab.describe(i) for i in s["raw_ids"][1:]] == s["tokens"]


def test_codec_layout():
    assert vocab.NUM_CLASSES == 1388 and vocab.VOCAB_SIZE == 1536
    assert vocab.event_id("shift", 0) == 3 and vocab.event_id("shift", 1000) == 1003
    assert vocab.event_id("pitch", 0) == 1004 and vocab.event_id("velocity", 1) == 1133
    assert vocab.event_id("tie") == 1134 and vocab.event_id("program", 127) == 1262
    assert vocab.event_id("drum", 127) == 1390
    for i in range(vocab.NUM_CLASSES):
        ev = vocab.decode_index(i)
        assert vocab.event_index(ev.type, ev.value) == i
    assert vocab.decode_index(-1) is None and vocab.decode_index(1388) is None


def test_trimming_rules_differ_only_where_documented():
    tie, p60, v1 = vocab.event_id("tie"), vocab.event_id("pitch", 60), vocab.event_id("velocity", 1)
    no_eos = [tie, v1, p60]
    assert vocab.trim_magenta(no_eos) == [i - 3 for i in no_eos]
    assert vocab.trim_kunato(no_eos) == []  # kunato drops a segment that hit the length limit
    with_unk = [tie, vocab.UNK, p60, vocab.EOS, p60]
    assert vocab.trim_kunato(with_unk) == [tie - 3]
    assert vocab.trim_magenta(with_unk) == [tie - 3, -2, p60 - 3]
    assert vocab.trim_magenta([1400, vocab.PAD]) == [-2, -2]


def test_flush_and_minimum_duration():
    v1, p = vocab.event_index("velocity", 1), vocab.event_index("pitch", 64)
    tie, s = vocab.event_index("tie", 0), vocab.event_index("shift", 10)
    got = tokens_to_notes([[tie, s, v1, p, p]], [0.0])
    # re-onset at the same time: first note gets the 10 ms minimum; the second ends at the flush
    t = 0.0 + 10 / 100
    assert as_tuples(got.notes) == [(t, t + 0.01, 64, 127, 0, False), (t, t + 0.01, 64, 127, 0, False)]
    assert got.total_time == t + 0.01
