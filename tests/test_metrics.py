"""Note metrics against hand-computed cases."""
from __future__ import annotations

import dataclasses
import json
import warnings

import pytest

from mt3_demo.metrics import agreement, instrument_breakdown, onset_f1, prf, score
from mt3_demo.notes import Note


def approx(x):
    return pytest.approx(x, abs=1e-9)


@pytest.fixture
def ref():
    # Four pitched notes (piano + violin) and two drum hits.
    return [
        Note(0.0, 0.5, 60, program=0),
        Note(0.5, 1.0, 64, program=0),
        Note(1.0, 2.0, 67, program=40),
        Note(2.0, 3.0, 72, program=40),
        Note(0.0, 0.01, 36, is_drum=True),
        Note(1.0, 1.01, 38, is_drum=True),
    ]


def shifted(notes, dt):
    return [dataclasses.replace(n, onset=n.onset + dt, offset=n.offset + dt) for n in notes]


def test_perfect_match_is_one(ref):
    s = score(ref, ref)
    for key in ("onset", "onset_offset", "program_aware", "drums"):
        assert s[key] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}, key
    assert s["counts"] == {"est": 6, "ref": 6, "est_drums": 2, "ref_drums": 2}


def test_onsets_shifted_beyond_tolerance_score_zero(ref):
    s = score(shifted(ref, 0.06), ref)  # 60 ms > the 50 ms onset tolerance
    for key in ("onset", "onset_offset", "program_aware", "drums"):
        assert s[key]["f1"] == 0.0, key


def test_onsets_shifted_within_tolerance_still_match(ref):
    s = score(shifted(ref, 0.04), ref)
    assert s["onset"]["f1"] == approx(1.0)
    assert s["onset_offset"]["f1"] == approx(1.0)  # offsets moved 40 ms < 50 ms minimum tolerance


def test_offset_mismatch_only_hurts_onset_offset(ref):
    # The first pitched note ends 0.4 s late (tolerance: max(20 % of 0.5 s, 50 ms) = 100 ms).
    est = [dataclasses.replace(ref[0], offset=0.9)] + ref[1:]
    s = score(est, ref)
    assert s["onset"]["f1"] == 1.0
    # 5 of 6 match: 4 pitched with 3 right offsets + 2 drums (onset-only).
    assert s["onset_offset"]["precision"] == approx(5 / 6)
    assert s["onset_offset"]["recall"] == approx(5 / 6)
    assert s["onset_offset"]["f1"] == approx(5 / 6)


def test_drum_offsets_are_ignored(ref):
    est = [dataclasses.replace(n, offset=n.onset + 0.5) if n.is_drum else n for n in ref]
    assert score(est, ref)["onset_offset"]["f1"] == 1.0


def test_program_aware_differs_from_flat_on_wrong_instrument(ref):
    # Right pitches and times, but the violin part is transcribed as a trumpet (program 56, Brass).
    est = [dataclasses.replace(n, program=56) if n.program == 40 and not n.is_drum else n for n in ref]
    s = score(est, ref)
    assert s["onset"]["f1"] == 1.0
    assert s["onset_offset"]["f1"] == 1.0
    # Program-aware: piano 2 + drums 2 match, the 2 violin notes do not → 4/6 each way.
    assert s["program_aware"] == {"precision": approx(4 / 6), "recall": approx(4 / 6), "f1": approx(4 / 6)}


def test_program_aware_uses_families_not_exact_programs(ref):
    # Violin (40) → viola (41): same GM family "Strings", so MT3's midi_class metric still matches.
    est = [dataclasses.replace(n, program=41) if n.program == 40 else n for n in ref]
    assert score(est, ref)["program_aware"]["f1"] == 1.0


def test_drums_never_match_pitched_notes():
    ref = [Note(0.0, 0.5, 36, program=0)]  # a low piano C
    est = [Note(0.0, 0.01, 36, is_drum=True)]  # a kick drum on the same key number
    s = score(est, ref)
    assert s["onset"]["f1"] == 0.0
    assert s["drums"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_partial_match_counts(ref):
    est = ref[:3] + [Note(5.0, 5.5, 50)]  # 3 right, 1 wrong, 3 missed
    s = score(est, ref)
    assert s["onset"]["precision"] == approx(3 / 4)
    assert s["onset"]["recall"] == approx(3 / 6)
    assert s["onset"]["f1"] == approx(2 * 0.75 * 0.5 / 1.25)


def test_one_to_one_matching():
    # Two estimates for one reference note: only one may match.
    ref = [Note(0.0, 1.0, 60)]
    est = [Note(0.0, 1.0, 60), Note(0.01, 1.0, 60)]
    s = score(est, ref)
    assert s["onset"]["precision"] == approx(0.5)
    assert s["onset"]["recall"] == approx(1.0)


def test_empty_inputs_do_not_crash(ref):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # also no mir_eval "notes are empty" warnings
        only_ref = score([], ref)
        only_est = score(ref, [])
        neither = score([], [])
    for s in (only_ref, only_est):
        for key in ("onset", "onset_offset", "program_aware", "drums"):
            assert s[key] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # Both empty: nothing to find, nothing wrongly found → defined as a perfect score.
    for key in ("onset", "onset_offset", "program_aware", "drums"):
        assert neither[key] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # No drums on either side: the drum score is vacuous, and the counts say so.
    pitched = [n for n in ref if not n.is_drum]
    s = score(pitched, pitched)
    assert s["counts"]["est_drums"] == s["counts"]["ref_drums"] == 0


def test_prf_conventions():
    assert prf(0, 0, 0) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert prf(0, 3, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert prf(2, 4, 2) == {"precision": 0.5, "recall": 1.0, "f1": approx(2 / 3)}


def test_negative_and_zero_length_notes_are_tolerated():
    notes = [Note(-0.01, 0.2, 60), Note(1.0, 1.0, 62)]
    assert score(notes, notes)["onset_offset"]["f1"] == 1.0


def test_score_is_json_serialisable(ref):
    json.dumps(score(ref, ref))


def test_agreement_symmetric_with_unit_diagonal(ref):
    transcriptions = {
        "a": ref,
        "b": ref[:3] + [Note(4.0, 4.5, 40)],
        "c": shifted(ref, 0.02)[::2],
        "silent": [],
    }
    ids, matrix = agreement(transcriptions)
    assert ids == ["a", "b", "c", "silent"]
    for i in range(4):
        assert matrix[i][i] == 1.0
        for j in range(4):
            assert matrix[i][j] == matrix[j][i]
            assert 0.0 <= matrix[i][j] <= 1.0
    # a vs b: 3 matches, 6 + 4 notes → F1 = 2·3/10.
    assert matrix[0][1] == approx(0.6)
    assert matrix[0][3] == 0.0
    # The one-directional F1 really is symmetric, not just mirrored.
    assert onset_f1(ref, transcriptions["b"]) == approx(onset_f1(transcriptions["b"], ref))
    json.dumps(matrix)


def test_agreement_single_and_empty():
    assert agreement({}) == ([], [])
    assert agreement({"x": []}) == (["x"], [[1.0]])


def test_instrument_breakdown_rows():
    notes = [
        Note(0.5, 1.0, 60, program=0),
        Note(1.0, 1.5, 79, program=0),
        Note(2.0, 2.5, 67, program=0),
        Note(0.2, 0.21, 42, is_drum=True),
        Note(0.1, 0.11, 36, is_drum=True),
        Note(3.0, 4.0, 64, program=100, label="Singing Voice"),
    ]
    rows = instrument_breakdown(notes)
    assert [r["instrument"] for r in rows] == ["Acoustic Grand Piano", "Drums", "Singing Voice"]
    piano, drums, voice = rows
    assert piano["family"] == "Piano"
    assert piano["notes"] == 3
    assert piano["pitch_range"] == "C4–G5"
    assert (piano["lowest"], piano["highest"]) == (60, 79)
    assert (piano["first_onset"], piano["last_onset"]) == (0.5, 2.0)
    assert drums["family"] == "Drums" and drums["is_drum"]
    assert drums["pitch_range"] == "Kick, Hi-hat"
    assert drums["lowest"] is None
    assert drums["first_onset"] == 0.1
    # Singing shows as singing, not as GM program 100's "FX 5 (brightness)".
    assert voice["family"] == "Singing Voice"
    assert voice["pitch_range"] == "E4"
    json.dumps(rows)
    assert instrument_breakdown([]) == []
