"""The shared notes → MIDI path: round trips, drums on channel 10, many instruments."""
from __future__ import annotations

import mido
import pretty_midi
import pytest

from mt3_demo.instruments import instrument_family, instrument_name
from mt3_demo.notes import (Note, Transcription, note_stats,
                            notes_from_midi, write_midi)


def _notes():
    return [
        Note(0.0, 0.5, 60, 90, program=0),
        Note(0.5, 1.0, 64, 80, program=0),
        Note(0.25, 1.25, 40, 100, program=33),
        Note(0.0, 0.01, 36, 100, program=0, is_drum=True),
        Note(0.5, 0.51, 38, 100, program=0, is_drum=True),
        Note(1.0, 1.5, 67, 100, program=65, label="Singing Voice"),
    ]


def test_round_trip_through_pretty_midi(tmp_path):
    path = write_midi(_notes(), tmp_path / "a.mid", end_time=2.0)
    midi = pretty_midi.PrettyMIDI(str(path))
    by_name = {i.name: i for i in midi.instruments}
    assert set(by_name) == {"Acoustic Grand Piano", "Electric Bass (finger)", "Drums", "Singing Voice"}
    assert by_name["Drums"].is_drum and len(by_name["Drums"].notes) == 2
    assert by_name["Electric Bass (finger)"].program == 33
    piano = sorted((n.start, n.end, n.pitch, n.velocity) for n in by_name["Acoustic Grand Piano"].notes)
    assert [p[2:] for p in piano] == [(60, 90), (64, 80)]
    assert [v for p in piano for v in p[:2]] == pytest.approx([0.0, 0.5, 0.5, 1.0], abs=2e-3)
    assert midi.get_end_time() == pytest.approx(2.0, abs=1e-3)
    back = notes_from_midi(path)
    assert len(back) == len(_notes())


def test_drums_on_channel_10_and_programs_set(tmp_path):
    path = write_midi(_notes(), tmp_path / "a.mid")
    mf = mido.MidiFile(str(path))
    channels_by_track = {}
    for track in mf.tracks:
        name = next((m.name for m in track if m.type == "track_name"), None)
        chans = {m.channel for m in track if m.type in ("note_on", "note_off")}
        if name:
            channels_by_track[name] = chans
    assert channels_by_track["Drums"] == {9}
    assert all(9 not in c for n, c in channels_by_track.items() if n != "Drums")


def test_more_than_15_instruments_never_use_drum_channel(tmp_path):
    notes = [Note(i * 0.1, i * 0.1 + 0.5, 60, 100, program=p) for i, p in enumerate(range(0, 120, 6))]
    notes.append(Note(0.0, 0.01, 36, is_drum=True))
    assert len({n.program for n in notes if not n.is_drum}) == 20
    path = write_midi(notes, tmp_path / "many.mid")
    mf = mido.MidiFile(str(path))
    for track in mf.tracks:
        name = next((m.name for m in track if m.type == "track_name"), "")
        for m in track:
            if m.type in ("note_on", "note_off"):
                assert (m.channel == 9) == (name == "Drums")
    midi = pretty_midi.PrettyMIDI(str(path))
    assert sum(len(i.notes) for i in midi.instruments) == 21
    # Every pitched channel is used and the first 15 programs keep their own channel.
    used = {m.channel for t in mf.tracks for m in t if m.type == "program_change"}
    assert used == set(range(16)) - {9}


def test_empty_notes_write_a_valid_file(tmp_path):
    path = write_midi([], tmp_path / "empty.mid", end_time=3.0)
    midi = pretty_midi.PrettyMIDI(str(path))
    assert sum(len(i.notes) for i in midi.instruments) == 0


def test_names_and_families():
    assert instrument_name(0) == "Acoustic Grand Piano"
    assert instrument_name(0, is_drum=True) == "Drums"
    assert instrument_name(65, label="Singing Voice") == "Singing Voice"
    assert instrument_family(33) == "Bass"
    assert instrument_family(42) == "Strings"
    assert instrument_family(5, is_drum=True) == "Drums"


def test_stats_and_json():
    notes = _notes()
    stats = note_stats(notes)
    assert stats["total"] == 6 and stats["pitched"] == 4 and stats["drum"] == 2
    assert stats["instruments"] == 4 and stats["pitch_range"] == [40, 67]
    assert stats["per_instrument"]["Acoustic Grand Piano"] == 2
    t = Transcription("x", notes, audio_seconds=2.0, load_seconds=1.0, inference_seconds=0.5,
                      tokens=[[5, 1]], info={"frontend": "tf"})
    j = t.to_json()
    assert j["timings"] == {"load_s": 1.0, "inference_s": 0.5, "rtf": 0.25}
    assert j["frontend"] == "tf" and "tokens" not in j
    assert j["backend"] == "local"  # where it ran; a Ray replica's says "ray"
    assert t.to_json(include_tokens=True)["tokens"] == [[5, 1]]
    assert set(j["notes"][0]) >= {"onset", "offset", "pitch", "velocity", "program", "is_drum"}


def test_shared_channel_reselects_program_before_each_note(tmp_path):
    notes = [Note(i * 0.1, i * 0.1 + 0.05, 60, 100, program=p) for i, p in enumerate(range(0, 120, 6))]
    mf = mido.MidiFile(str(write_midi(notes, tmp_path / "many.mid")))
    shared = 0
    for track in mf.tracks:
        msgs = [m for m in track if not m.is_meta]
        programs = {m.program for m in msgs if m.type == "program_change"}
        if len(programs) != 1:
            continue
        program = programs.pop()
        on_channel_15 = any(m.type == "note_on" and m.channel == 15 for m in msgs)
        if not on_channel_15:
            continue
        shared += 1
        for prev, msg in zip(msgs, msgs[1:]):
            if msg.type == "note_on":
                assert prev.type == "program_change" and prev.program == program
    assert shared == 6  # programs 15..20 share the last pitched channel
