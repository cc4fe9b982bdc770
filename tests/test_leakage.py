"""Instrument-leakage measures (MR-MT3's distinct-instrument count and detection P/R/F1) on hand-made sets."""
from __future__ import annotations

import json

import pytest

from mt3_demo.leakage import instrument_leakage
from mt3_demo.notes import Note


def notes(*instruments, each=1):
    """``each`` notes per instrument; an int is a GM program, "drums" a drum hit."""
    out = []
    for inst in instruments:
        for i in range(each):
            if inst == "drums":
                out.append(Note(onset=i * 0.5, offset=i * 0.5 + 0.01, pitch=36, is_drum=True))
            else:
                out.append(Note(onset=i * 0.5, offset=i * 0.5 + 0.4, pitch=60, program=inst))
    return out


def test_without_reference_only_counts():
    m = instrument_leakage(notes(0, 0, 33, "drums"))
    assert m == {"programs": [0, 33], "count": 3, "drums": True}
    json.dumps(m)


def test_drums_are_not_piano():
    # MR-MT3's script would see program 0 twice and call this a perfect detection.
    m = instrument_leakage(notes("drums"), notes(0))
    assert m["count"] == 1 and m["programs"] == [] and m["drums"] is True
    assert m["detection"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert m["family_detection"]["f1"] == 0.0
    assert m["leaked"] == [{"program": None, "name": "Drums", "notes": 1}]
    assert m["missed"] == [{"program": 0, "name": "Acoustic Grand Piano", "notes": 1}]


def test_program_and_family_level():
    # Predicted: Acoustic Grand (0), Bright Acoustic (1, same family), Violin (40), drums.
    # Reference: Acoustic Grand (0), Fingered Bass (33), drums.
    est = notes(0, 1, "drums") + notes(40, each=3)
    ref = notes(0, 33, "drums")
    m = instrument_leakage(est, ref)
    assert m["count"] == 4 and m["reference_count"] == 3
    # Programs: matched {0, drums} → P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    assert m["detection"]["precision"] == pytest.approx(0.5)
    assert m["detection"]["recall"] == pytest.approx(2 / 3)
    assert m["detection"]["f1"] == pytest.approx(4 / 7)
    # Families: predicted {piano, strings, drums}, reference {piano, bass, drums} → 2/3 each.
    assert m["family_detection"]["precision"] == pytest.approx(2 / 3)
    assert m["family_detection"]["recall"] == pytest.approx(2 / 3)
    # Leaked, most notes first, with the prediction's note counts; missed with the reference's.
    assert m["leaked"] == [{"program": 40, "name": "Violin", "notes": 3},
                           {"program": 1, "name": "Bright Acoustic Piano", "notes": 1}]
    assert m["missed"] == [{"program": 33, "name": "Electric Bass (finger)", "notes": 1}]


def test_same_family_other_program_leaks_only_at_program_level():
    m = instrument_leakage(notes(1), notes(0))
    assert m["detection"]["f1"] == 0.0
    assert m["family_detection"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


@pytest.mark.parametrize("est,ref,expected", [
    ([], [], 1.0),          # nothing to find, nothing wrongly found
    (notes(0), [], 0.0),    # everything predicted leaked
    ([], notes(0), 0.0),    # everything missed
])
def test_empty_sets_have_defined_values(est, ref, expected):
    m = instrument_leakage(est, ref)
    for key in ("detection", "family_detection"):
        assert m[key] == {"precision": expected, "recall": expected, "f1": expected}
    assert m["count"] == len({n.program for n in est})
    assert len(m["leaked"]) == (1 if est and not ref else 0)
    assert len(m["missed"]) == (1 if ref and not est else 0)


def test_label_names_the_instrument():
    voice = [Note(0.0, 1.0, 64, program=100, label="Singing Voice")]
    m = instrument_leakage(voice, notes(0))
    assert m["leaked"] == [{"program": 100, "name": "Singing Voice", "notes": 1}]
