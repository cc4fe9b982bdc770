"""The diff view's note classification (equal to mir_eval's matching and the scores' counts),
its PNG, and per-instrument MIDI stems."""
from __future__ import annotations

import zipfile
from collections import Counter

import mido
import mir_eval
import numpy as np
import pretty_midi
import pytest

from mt3_demo import pianoroll
from mt3_demo.metrics import DIFF_MODES, note_diff, score
from mt3_demo.notes import Note, notes_from_midi, write_midi
from mt3_demo.stems import stem_groups, write_stems_zip


@pytest.fixture
def crafted():
    """Near-miss onsets around the 50 ms tolerance, a pitch off by a semitone, one reference note
    reachable by two estimates (only one may take it), a wrong-family match and drums."""
    ref = [
        Note(0.00, 0.50, 60, program=0),
        Note(1.00, 1.50, 62, program=0),
        Note(2.00, 2.50, 64, program=0),
        Note(3.00, 3.50, 65, program=0),
        Note(3.04, 3.60, 65, program=0),   # twin of the previous one, 40 ms later
        Note(4.00, 4.50, 67, program=40),  # violin
        Note(5.00, 5.01, 38, is_drum=True),
        Note(6.00, 6.01, 36, is_drum=True),
    ]
    est = [
        Note(0.049, 0.50, 60, program=0),  # inside 50 ms → matched
        Note(1.051, 1.50, 62, program=0),  # just outside → extra, and ref 1 missed
        Note(2.00, 2.50, 63, program=0),   # a semitone off → extra, ref 2 missed
        Note(3.02, 3.55, 65, program=0),   # close to both twins
        Note(3.06, 3.58, 65, program=0),   # close to the second twin only: max matching takes both
        Note(4.01, 4.50, 67, program=0),   # right pitch, piano instead of violin
        Note(5.03, 5.04, 38, is_drum=True),
        Note(6.00, 6.01, 60, program=0),   # a piano note where the kick is: never matches a drum
    ]
    return est, ref


def _mir_eval_pairs(est, ref, with_offsets):
    def arrays(ns):
        return (np.array([[n.onset, max(n.offset, n.onset + 0.01)] for n in ns]),
                mir_eval.util.midi_to_hz(np.array([float(n.pitch) for n in ns])))
    (ri, rp), (ei, ep) = arrays(ref), arrays(est)
    matching = mir_eval.transcription.match_notes(ri, rp, ei, ep, onset_tolerance=0.05,
                                                  offset_ratio=0.2 if with_offsets else None)
    return sorted((e, r) for r, e in matching)


def test_flat_diff_is_mir_eval_matching(crafted):
    est, ref = crafted
    pitched_est = [n for n in est if not n.is_drum]
    pitched_ref = [n for n in ref if not n.is_drum]
    d = note_diff(pitched_est, pitched_ref, "onset")
    assert d["pairs"] == _mir_eval_pairs(pitched_est, pitched_ref, with_offsets=False)
    # The hand-worked answer: est 0, 3, 4, 5 matched (est 5: flat ignores the instrument).
    assert d["est_matched"] == [True, False, False, True, True, True, False]
    assert d["ref_matched"] == [True, False, False, True, True, True]


@pytest.mark.parametrize("mode", list(DIFF_MODES))
def test_diff_counts_are_the_scores_counts(crafted, mode):
    est, ref = crafted
    d = note_diff(est, ref, mode)
    s = score(est, ref)[mode]
    assert d["matched"] + d["extra"] == len(est) and d["matched"] + d["missed"] == len(ref)
    assert sum(d["est_matched"]) == sum(d["ref_matched"]) == d["matched"]
    assert s["precision"] == pytest.approx(d["matched"] / len(est), abs=1e-12)
    assert s["recall"] == pytest.approx(d["matched"] / len(ref), abs=1e-12)
    for e, r in d["pairs"]:  # every pair is a legal match under the mode's rules
        assert est[e].is_drum == ref[r].is_drum and abs(est[e].onset - ref[r].onset) <= 0.05 + 1e-9
        assert est[e].pitch == ref[r].pitch


def test_program_aware_diff_keeps_families_apart(crafted):
    est, ref = crafted
    flat, aware = note_diff(est, ref, "onset"), note_diff(est, ref, "program_aware")
    assert flat["est_matched"][5] and not aware["est_matched"][5]  # piano for a violin
    assert aware["est_matched"][6] and aware["ref_matched"][6]     # the snare, drums vs drums
    assert not flat["ref_matched"][7]                               # the kick: only a piano note near it


def test_diff_handles_empty_sides_and_bad_mode():
    one = [Note(0.0, 1.0, 60)]
    assert note_diff([], one)["missed"] == 1 and note_diff(one, [])["extra"] == 1
    assert note_diff([], [])["matched"] == 0
    with pytest.raises(ValueError, match="unknown diff mode"):
        note_diff(one, one, "offset")


def test_diff_png(crafted, tmp_path):
    est, ref = crafted
    d = note_diff(est, ref, "onset")
    fig = pianoroll.render_diff(est, ref, d, duration=7.0, title="transkun", path=tmp_path / "t_diff.png")
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert labels == [f"missed · {d['missed']}", f"extra · {d['extra']}", f"matched · {d['matched']}"]
    assert (tmp_path / "t_diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.axes[0].get_xlim() == (0.0, 7.0)


# ------------------------------------------------------------------------------------------------
# Stems


@pytest.fixture
def band():
    return [
        Note(0.0, 1.0, 60, velocity=90, program=0),
        Note(1.0, 2.0, 64, velocity=80, program=0),
        Note(0.5, 2.5, 40, program=33),
        Note(2.0, 3.0, 67, program=25),
        Note(3.0, 3.5, 69, program=100, label="Singing Voice"),
        Note(0.0, 0.01, 36, is_drum=True),
        Note(0.5, 0.51, 38, is_drum=True),
    ]


def _key(n: Note):
    # Both sides are read back from files written by write_midi (times on the same tick grid);
    # rounding to 1 ms only absorbs float noise from tick → seconds conversion.
    return (round(n.onset, 3), round(n.offset, 3), n.pitch, n.velocity, n.program, n.is_drum)


def test_stems_one_playable_midi_per_instrument(band, tmp_path):
    zpath = write_stems_zip(band, tmp_path / "stems.zip", end_time=4.0)
    with zipfile.ZipFile(zpath) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "x")
    assert names == ["000_Acoustic_Grand_Piano.mid", "025_Acoustic_Guitar_steel.mid",
                     "033_Electric_Bass_finger.mid", "100_Singing_Voice.mid", "drums_Drums.mid"]
    union = []
    for name in names:
        path = tmp_path / "x" / name
        mf = mido.MidiFile(str(path))  # parses as a standard MIDI file
        channels = {m.channel for t in mf.tracks for m in t if m.type == "note_on"}
        assert channels == ({9} if name.startswith("drums") else {0})  # alone, each gets channel 1
        assert pretty_midi.PrettyMIDI(str(path)).get_end_time() == pytest.approx(4.0, abs=0.01)
        stem = notes_from_midi(path)
        assert len({(n.program, n.is_drum) for n in stem}) == 1
        union += stem
    full = notes_from_midi(write_midi(band, tmp_path / "full.mid", end_time=4.0))
    assert Counter(map(_key, union)) == Counter(map(_key, full))
    assert len(union) == len(band)


def test_stems_group_by_program_and_empty(tmp_path):
    assert stem_groups([]) == {}
    zpath = write_stems_zip([], tmp_path / "empty.zip")
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == []
    zpath = write_stems_zip([Note(0, 1, 60)], tmp_path / "m.zip", folder="transkun")
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == ["transkun/000_Acoustic_Grand_Piano.mid"]
