"""Issue 21 (Hardening II): hostile reference MIDI, refused uploads, the sha256 pin's
time-of-check/time-of-use, CLI outputs that would overwrite inputs or pass the file system's
limits, tracebacks, transkun .conf bounds, server paths in messages, ``compare --checkpoints``.

Every hostile input is built here, small and fast (a million-note MIDI is a few MB of raw bytes).
"""
from __future__ import annotations

import os
import shutil
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import EXAMPLES, FIXTURES, serve_mt3_from_fake_hub
from mt3_demo import checkpoints, reference
from mt3_demo.checkpoints import CheckpointError, safe_torch_load, sha256_file
from mt3_demo.notes import notes_from_midi
from mt3_demo.options import Settings

PIANO_MID = EXAMPLES / "piano_cschumann_polonaise.mid"
MT3_PTH = FIXTURES / "mt3" / "tiny_model" / "mt3.pth"
MT3_CONFIG = FIXTURES / "mt3" / "tiny_model" / "config.json"


# ------------------------------------------------------------------------------------------------
# Raw MIDI bytes


def smf(*tracks: bytes, division: int = 480, fmt: int = 1, n_tracks: int | None = None) -> bytes:
    header = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks) if n_tracks is None else n_tracks, division)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


END = b"\x00\xff\x2f\x00"


def notes_track(n: int, pitch: int = 60) -> bytes:
    """n notes one tick apart, note-on then note-on of velocity 0 in running status."""
    return b"\x00\x90" + bytes([pitch, 100]) + (bytes([1, pitch, 0, 0, pitch, 100]) * (n - 1)) \
        + bytes([1, pitch, 0]) + END


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------
# 1 + 9. A reference MIDI is bounded before and while it is read; each problem is one sentence


def test_reference_reads_as_pretty_midi_does():
    """Every shipped reference: the same notes (times, pitches, velocities, programs, drums)."""
    files = sorted(EXAMPLES.glob("*.mid")) + sorted(FIXTURES.rglob("*.mid"))
    compared = 0
    for path in files:
        expected = notes_from_midi(path)
        if not expected:
            continue
        got = reference.read_reference(path)
        assert [(n.pitch, n.velocity, n.program, n.is_drum) for n in got] == \
            [(n.pitch, n.velocity, n.program, n.is_drum) for n in expected], path.name
        # Both compute seconds from the same integer ticks in float64: a few ulps of ~100 s.
        np.testing.assert_allclose([(n.onset, n.offset) for n in got], [(n.onset, n.offset) for n in expected],
                                   rtol=0, atol=1e-9)
        compared += 1
    assert compared >= 10


def test_tempo_changes_and_note_pairing_follow_pretty_midi(tmp_path):
    tempo_track = (b"\x00\xff\x51\x03" + (1_000_000).to_bytes(3, "big")  # 60 bpm from the start
                   + b"\x83\x60\xff\x51\x03" + (250_000).to_bytes(3, "big") + END)  # 240 bpm from tick 480
    # Channel 9 is drums; program 5 on channel 0; two overlapping notes of one pitch closed by one
    # note-off (pretty_midi closes both); a note-on and note-off on the same tick is dropped.
    notes = (b"\x00\xc0\x05" b"\x00\x90\x40\x50" b"\x81\x70\x90\x40\x60" b"\x81\x70\x80\x40\x00"
             b"\x00\x99\x24\x7f" b"\x10\x89\x24\x00" b"\x00\x90\x30\x40" b"\x00\x80\x30\x00" + END)
    path = write(tmp_path, "tempo.mid", smf(tempo_track, notes))
    got = reference.read_reference(path)
    want = notes_from_midi(path)
    assert [(n.pitch, n.velocity, n.program, n.is_drum) for n in got] == \
        [(n.pitch, n.velocity, n.program, n.is_drum) for n in want]
    np.testing.assert_allclose([(n.onset, n.offset) for n in got], [(n.onset, n.offset) for n in want],
                               rtol=0, atol=1e-12)
    # 480 ticks at 60 bpm are 1 s; the drum's 16 ticks after that, at 240 bpm, 16 / 480 / 4 s.
    assert [(n.onset, n.offset, n.program, n.is_drum) for n in got] == [
        (0.0, 1.0, 5, False), (0.5, 1.0, 5, False), (1.0, pytest.approx(1.0 + 16 / 480 / 4), 0, True)]


CASES = {
    "empty": (b"", "is empty (0 bytes)"),
    "text": (b"these are not MIDI bytes\n" * 10, "is not a MIDI file"),
    "truncated": (smf(notes_track(100))[:300], "is truncated"),
    "no-notes": (smf(END), "has no notes"),
    "header-only": (smf(n_tracks=1), "is truncated"),
    "too-many-tracks": (smf(END, n_tracks=reference.MAX_TRACKS + 1), "tracks"),
    "too-many-notes": (smf(notes_track(reference.MAX_NOTES + 1)), "notes a reference may have"),
    "too-many-events": (smf(b"\x00\xb0\x07\x64" + b"\x00\x07\x64" * reference.MAX_EVENTS + END),
                        "MIDI events a reference may have"),
    "data-byte-above-127": (smf(b"\x00\x90\xc0\x40" + END), "a data byte above 127"),
    "running-status-first": (smf(b"\x00\x40\x40" + END), "a data byte where an event should start"),
    "undefined-status": (smf(b"\x00\xf4" + END), "undefined status byte"),
    "smpte": (smf(notes_track(2), division=0xE728), "no ticks per beat"),
    "not-a-track": (smf(END).replace(b"MTrk", b"XXXX"), "does not start with a track header"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_reference_gets_one_sentence(tmp_path, case):
    data, expected = CASES[case]
    path = write(tmp_path, "ref.mid", data)
    with pytest.raises(reference.ReferenceError) as info:
        reference.read_reference(path)
    message = str(info.value)
    assert expected in message and "'ref.mid'" in message
    assert str(tmp_path) not in message and "()" not in message and "\n" not in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence


def test_a_million_note_reference_is_refused_by_its_size_before_reading(tmp_path):
    path = write(tmp_path, "million.mid", smf(notes_track(1_000_000)))
    assert path.stat().st_size > reference.MAX_BYTES
    tracemalloc.start()
    with pytest.raises(reference.ReferenceError, match="MB; a reference may be at most"):
        reference.read_reference(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20  # not one byte of it was read


def test_a_reference_at_the_note_bound_is_read_in_proportion(tmp_path):
    """Under the size bound but over the note bound: refused after MAX_NOTES notes, holding only
    their ticks (tuples), never message objects or a tick-to-time table."""
    data = smf(notes_track(reference.MAX_NOTES + 1))
    assert len(data) < reference.MAX_BYTES
    tracemalloc.start()
    with pytest.raises(reference.ReferenceError, match=f"{reference.MAX_NOTES:,} notes"):
        reference.read_midi(data, "x")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # One (on, off, pitch, velocity, program, channel) tuple per note: ~150 bytes with its ints.
    assert peak < reference.MAX_NOTES * 400


def test_a_reference_longer_than_the_recording_is_trimmed(tmp_path):
    notes = reference.read_reference(PIANO_MID)
    kept, warning = reference.fit(notes, 5.0, "piano.mid")
    assert kept == [n for n in notes if n.onset < 5.0] and len(kept) < len(notes)
    assert f"{len(notes) - len(kept)} later notes were left out" in warning
    assert reference.fit(notes, 1000.0, "piano.mid") == (notes, None)
    with pytest.raises(reference.ReferenceError, match="has no notes in the recording's 0.1 s"):
        reference.fit([n for n in notes if n.onset > 1.0], 0.1, "piano.mid")


# ------------------------------------------------------------------------------------------------
# 2. Every upload refused before the queue is deleted at once (and only that one)


@pytest.fixture
def gradio_dir(tmp_path) -> Path:
    """Gradio's upload folder (``Settings.upload_dir``, which the app reads from GRADIO_TEMP_DIR)."""
    folder = tmp_path / "gradio"
    folder.mkdir()
    return folder.resolve()


def upload(gradio_dir: Path, name: str, data: bytes | None = None, seconds: float = 0.5) -> Path:
    """A file where Gradio keeps uploads: <cache>/<hash folder>/<name>."""
    folder = gradio_dir / os.urandom(4).hex()
    folder.mkdir(parents=True)
    path = folder / name
    if data is None:
        sf.write(str(path), (0.1 * np.sin(np.arange(int(16000 * seconds)) / 10)).astype(np.float32), 16000)
    else:
        path.write_bytes(data)
    return path


AUDIO_REJECTIONS = {
    "text": lambda d: upload(d, "a.wav", b"plain text, not audio"),
    "empty": lambda d: upload(d, "a.wav", b""),
    "too-long": lambda d: upload(d, "a.wav", seconds=3.0),  # the limit below is 2 s
    "truncated-riff": lambda d: upload(d, "a.wav", b"RIFF\x00\x00\x00\x00WAVEfmt "),
}
REFERENCE_REJECTIONS = {case: data for case, (data, _) in CASES.items()}
REFERENCE_REJECTIONS["oversized"] = b"MThd" + b"\0" * (reference.MAX_BYTES + 1)


def validator_manager():
    from mt3_demo.manager import ModelManager

    return ModelManager(device=torch.device("cpu"))


@pytest.mark.parametrize("case", list(AUDIO_REJECTIONS))
def test_validator_deletes_a_refused_recording(gradio_dir, case):
    from mt3_demo.ui import handlers

    bad = AUDIO_REJECTIONS[case](gradio_dir)
    good_ref = upload(gradio_dir, "ref.mid", PIANO_MID.read_bytes())
    audio, _, ref = handlers.validate_inputs(validator_manager(), 2.0, str(bad), ["transkun"], str(good_ref),
                                             gradio_dir)
    assert audio["is_valid"] is False and ref["is_valid"] is True
    assert not bad.exists() and not bad.parent.exists()  # Gradio's hash folder goes with it
    assert good_ref.exists()  # what passed stays: the request may be sent again with a new recording


@pytest.mark.parametrize("case", list(REFERENCE_REJECTIONS))
def test_validator_deletes_a_refused_reference(gradio_dir, case):
    from mt3_demo.ui import handlers

    audio = upload(gradio_dir, "a.wav")
    bad = upload(gradio_dir, "ref.mid", REFERENCE_REJECTIONS[case])
    checks = handlers.validate_inputs(validator_manager(), 600.0, str(audio), ["transkun"], str(bad), gradio_dir)
    assert [c["is_valid"] for c in checks] == [True, True, False]
    assert "ref.mid" in checks[2]["message"] and str(gradio_dir) not in checks[2]["message"]
    assert not bad.exists() and audio.exists()


def test_a_refused_selection_deletes_no_upload(gradio_dir):
    from mt3_demo.ui import handlers

    audio, ref = upload(gradio_dir, "a.wav"), upload(gradio_dir, "ref.mid", PIANO_MID.read_bytes())
    checks = handlers.validate_inputs(validator_manager(), 600.0, str(audio), [], str(ref), gradio_dir)
    assert [c["is_valid"] for c in checks] == [True, False, True]
    assert audio.exists() and ref.exists()


@pytest.mark.parametrize("case", list(AUDIO_REJECTIONS))
def test_upload_check_deletes_a_refused_recording(gradio_dir, case):
    from mt3_demo.ui import handlers

    bad = AUDIO_REJECTIONS[case](gradio_dir)
    note = handlers.check_upload(str(bad), 2.0, gradio_dir)
    assert "a.wav" in note and not bad.exists()
    # Sent anyway: one sentence that says what happened, no path.
    (audio_check, _, _) = handlers.validate_inputs(validator_manager(), 2.0, str(bad), ["transkun"], None, gradio_dir)
    assert "upload a recording again" in audio_check["message"] and str(gradio_dir) not in audio_check["message"]


def test_request_deletes_a_reference_of_another_recording(gradio_dir):
    """Past the validator (which does not know the length yet): a reference with no note inside
    the recording is refused by the request, and deleted."""
    from mt3_demo.ui import session

    audio = upload(gradio_dir, "a.wav", seconds=0.5)
    late = upload(gradio_dir, "late.mid", smf(b"\x83\x60" + notes_track(3)[1:]))  # first note at 1 s
    with pytest.raises(session.InputError, match="has no notes in the recording's 0.5 s"):
        session.start(str(audio), ["transkun"], str(late), validator_manager(), 600.0,
                      Settings(upload_dir=gradio_dir))
    assert not late.exists() and audio.exists()


def test_examples_and_files_outside_the_upload_folder_are_never_deleted(gradio_dir, tmp_path):
    from mt3_demo.ui import handlers

    outside = write(tmp_path, "mine.wav", b"not audio")
    handlers.validate_inputs(validator_manager(), 600.0, str(outside), ["transkun"], str(outside), gradio_dir)
    handlers.check_upload(str(outside), 600.0, gradio_dir)
    assert outside.exists()


# ------------------------------------------------------------------------------------------------
# 3. The sha256 pin: the bytes loaded are the bytes hashed


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """MT3 from a fake Hub cache laid out as huggingface_hub's: snapshots/<rev>/mt3.pth is a
    symlink to blobs/<hash>; the pinned sha256 is the genuine file's."""
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snap.mkdir(parents=True)
    shutil.copy(MT3_PTH, blobs / "genuine")
    sd = torch.load(MT3_PTH, weights_only=True)
    torch.save({k: v * 2 for k, v in sd.items()}, blobs / "evil")  # a valid checkpoint, other weights
    (snap / "mt3.pth").symlink_to(blobs / "genuine")
    shutil.copy(MT3_CONFIG, snap / "config.json")
    return serve_mt3_from_fake_hub(monkeypatch, snap), snap / "mt3.pth", blobs, sd


def repoint(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".new")
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic, as an attacker would


def test_a_repointed_snapshot_link_is_refused(hub_cache):
    """Before: the pin was looked up by the link's target, so a re-pointed link was simply unpinned."""
    adapter, link, blobs, _ = hub_cache
    location = adapter.resolve(None)  # downloads (fake) and verifies
    repoint(link, blobs / "evil")
    with pytest.raises(CheckpointError, match="mt3.pth is corrupt or not the published file"):
        adapter.load_model(location)


@pytest.mark.parametrize("mmap", [False, True])
def test_a_swap_between_the_hash_and_the_read_loads_the_hashed_bytes(hub_cache, monkeypatch, mmap):
    """The race itself: the link is re-pointed right after the bytes were hashed. What is loaded is
    the file that was opened and hashed, never the swapped one."""
    adapter, link, blobs, genuine = hub_cache
    adapter.resolve(None)
    real_hash = checkpoints._hash_open

    def hash_then_swap(f, name):
        result = real_hash(f, name)
        repoint(link, blobs / "evil")
        return result

    monkeypatch.setattr(checkpoints, "_hash_open", hash_then_swap)
    loaded = safe_torch_load(link, mmap=mmap)
    assert os.path.realpath(link) == str(blobs / "evil")  # the swap happened
    for key, value in genuine.items():
        assert torch.equal(loaded[key], value), key


def test_an_in_place_write_while_reading_is_refused(hub_cache, monkeypatch):
    adapter, link, blobs, _ = hub_cache
    adapter.resolve(None)
    real_load = checkpoints._torch_load

    def load_then_write(*args, **kwargs):
        out = real_load(*args, **kwargs)
        with open(blobs / "genuine", "r+b") as f:  # the same inode, changed under the reader
            f.seek(100)
            f.write(b"\0")
        return out

    monkeypatch.setattr(checkpoints, "_torch_load", load_then_write)
    with pytest.raises(CheckpointError, match="changed while it was being read"):
        safe_torch_load(link)


# ------------------------------------------------------------------------------------------------
# 5 + 6. CLI outputs: never an input, never two flags on one file, names within the file system's limits


@pytest.fixture
def song(tmp_path) -> Path:
    path = tmp_path / "song.wav"
    sf.write(str(path), np.zeros(1600, dtype=np.float32), 16000)
    return path


def cli(capsys, *argv: str) -> tuple[int, str]:
    from mt3_demo.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--midi", "--png", "--json"])
def test_transcribe_refuses_to_write_over_its_recording(capsys, song, flag):
    before = song.read_bytes()
    code, err = cli(capsys, "transcribe", str(song), flag, str(song))
    assert code == 2 and "song.wav is the audio file itself" in err
    assert song.read_bytes() == before and str(song.parent) not in err


@pytest.mark.parametrize("link", ["symlink", "hardlink", "dotted"])
def test_the_same_file_under_another_name_is_refused(capsys, song, tmp_path, link):
    other = tmp_path / "sub" / "out.mid"
    other.parent.mkdir()
    if link == "symlink":
        other.symlink_to(song)
    elif link == "hardlink":
        os.link(song, other)
    else:
        other = tmp_path / "sub" / ".." / "song.wav"
    before = song.read_bytes()
    code, err = cli(capsys, "transcribe", str(song), "--midi", str(other))
    assert code == 2 and "is the audio file itself" in err and song.read_bytes() == before


def test_two_outputs_on_one_file_are_refused(capsys, song, tmp_path):
    code, err = cli(capsys, "transcribe", str(song), "--midi", str(tmp_path / "x"), "--png", str(tmp_path / "x"))
    assert code == 2 and "--midi and --png name the same file x" in err


def test_an_output_over_a_checkpoint_is_refused(capsys, song, tmp_path):
    ckpt = tmp_path / "mt3.pth"
    shutil.copy(MT3_PTH, ckpt)
    code, err = cli(capsys, "transcribe", str(song), "--model", "mt3", "--checkpoint", str(ckpt), "--png", str(ckpt))
    assert code == 2 and "is the --checkpoint file itself" in err and sha256_file(ckpt) == sha256_file(MT3_PTH)


@pytest.mark.parametrize("victim", ["audio", "reference"])
def test_compare_refuses_an_out_folder_where_a_run_file_is_an_input(capsys, tmp_path, victim):
    """``compare x.wav --out DIR`` writes DIR/<model>.wav, DIR/<model>.mid, …: an input of that
    name in DIR would be overwritten."""
    out = tmp_path / "out"
    out.mkdir()
    audio, ref = out / "transkun.wav", out / "transkun.mid"
    sf.write(str(audio if victim == "audio" else tmp_path / "a.wav"), np.zeros(1600, dtype=np.float32), 16000)
    shutil.copy(PIANO_MID, ref if victim == "reference" else tmp_path / "r.mid")
    args = [str(audio if victim == "audio" else tmp_path / "a.wav"), "--reference",
            str(ref if victim == "reference" else tmp_path / "r.mid")]
    before = {p: p.read_bytes() for p in out.iterdir()}
    code, err = cli(capsys, "compare", *args, "--models", "transkun", "--out", str(out))
    assert code == 2 and "is the" in err and "file itself" in err
    assert {p: p.read_bytes() for p in out.iterdir()} == before and str(tmp_path) not in err


def test_output_names_over_the_file_system_limit_are_refused_up_front(capsys, song, tmp_path):
    long_name = "n" * 300 + ".mid"
    code, err = cli(capsys, "transcribe", str(song), "--midi", str(tmp_path / long_name))
    assert code == 2 and "bytes long; this file system allows at most" in err
    assert str(tmp_path) not in err and long_name not in err  # shortened, no folder
    deep = tmp_path.joinpath(*["d" * 200] * 25) / "x.mid"  # every part fits, the whole does not
    code, err = cli(capsys, "transcribe", str(song), "--png", str(deep))
    assert code == 2 and "the path to x.mid would be" in err and str(tmp_path) not in err


def test_compare_checks_the_report_name_it_derives_from_the_recording(capsys, tmp_path):
    """The zip is named after the recording: a 240-character name is fine for the WAV and too long
    for '<name>__mt3-demo-report.zip'. Refused before the run, not after it."""
    audio = tmp_path / ("a" * 240 + ".wav")
    sf.write(str(audio), np.zeros(1600, dtype=np.float32), 16000)
    code, err = cli(capsys, "compare", str(audio), "--models", "transkun", "--out", str(tmp_path / "out"))
    assert code == 2 and "__mt3-demo-report.zip" not in err and "bytes long" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_run_file_names_are_the_files_a_run_writes(tmp_path):
    """The table the checks use is the one the writers use."""
    from mt3_demo import writers
    from mt3_demo.audio import Clip
    from mt3_demo.pipeline import finish
    from mt3_demo.notes import Note
    from mt3_demo.results import ModelResult
    from mt3_demo.notes import Transcription

    clip = Clip.from_array(np.zeros(16000, dtype=np.float32))
    clip.path = tmp_path / "rec.wav"
    notes = [Note(0.1, 0.5, 60)]
    results = []
    for m in ("a", "b"):
        r = ModelResult(m, m)
        r.files, _ = writers.write_model_files(notes, clip, tmp_path / "out", m, m)
        r.transcription = Transcription(m, notes, 1.0)
        results.append(r)
    writers.write_run(finish(results, clip, notes, "ref.mid"), tmp_path / "out")
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written <= set(writers.run_file_names(["a", "b"], "rec.wav"))
    assert len(written) == len(writers.run_file_names(["a", "b"], "rec.wav"))


# ------------------------------------------------------------------------------------------------
# 7. A model failure is one line and an exit code; the traceback only with --debug


@pytest.fixture
def failing_model(monkeypatch):
    from mt3_demo import manager

    def fail(self, *args, **kwargs):
        raise RuntimeError("shapes differ in layer 3")

    monkeypatch.setattr(manager.ModelManager, "transcribe", fail)
    monkeypatch.delenv("MT3_DEMO_DEBUG", raising=False)


@pytest.mark.parametrize("command", ["transcribe", "compare"])
def test_a_model_failure_is_one_line(capsys, song, tmp_path, failing_model, command):
    extra = ["--model", "transkun"] if command == "transcribe" else ["--models", "transkun", "--out",
                                                                    str(tmp_path / "o"), "--no-synth"]
    code, err = cli(capsys, command, str(song), *extra)
    assert code == 1 and "Traceback" not in err
    failures = [ln for ln in err.splitlines() if "shapes differ in layer 3" in ln]
    assert len(failures) == 1, err


def test_debug_shows_the_traceback(capsys, song, failing_model):
    code, err = cli(capsys, "--debug", "transcribe", str(song), "--model", "transkun")
    assert code == 1 and "Traceback" in err and "shapes differ in layer 3" in err


def test_library_warnings_are_not_printed_without_debug(capsys, song, monkeypatch):
    import warnings

    from mt3_demo import manager

    def warn_then_fail(self, *args, **kwargs):
        warnings.warn("some library's deprecation", UserWarning)
        raise RuntimeError("failed after a warning")

    monkeypatch.setattr(manager.ModelManager, "transcribe", warn_then_fail)
    code, err = cli(capsys, "transcribe", str(song), "--model", "transkun")
    assert code == 1 and "deprecation" not in err and "UserWarning" not in err
    # What is left: the clip's own note (the test recording is silent) and the failure's line.
    assert [ln.split(":")[0] for ln in err.splitlines()] == ["warning", "error"]


# ------------------------------------------------------------------------------------------------
# 8. transkun .conf: every value bounded, exit 4 naming the file


def conf_folder(tmp_path: Path, text: str | None = None, **changes) -> Path:
    from mt3_demo.models import transkun

    wheel = transkun.resolve(None)
    folder = tmp_path / "tk"
    folder.mkdir(exist_ok=True)
    if not (folder / "2.0.pt").exists():
        (folder / "2.0.pt").symlink_to(wheel / "2.0.pt")
    if text is None:
        import json

        conf = json.loads((wheel / "2.0.conf").read_text())
        conf["Model"]["config"].update(changes)
        text = json.dumps(conf)
    (folder / "2.0.conf").write_text(text)
    return folder


@pytest.mark.parametrize("changes, message", [
    ({"fs": 0}, "fs = 0 is not a plausible int (allowed 8000 to 96000)"),
    ({"hopSize": 0}, "hopSize = 0 is not a plausible int"),
    ({"nLayers": 1e6}, "nLayers = 1000000.0 is not a plausible int (a whole number)"),
    ({"nLayers": 10**6}, "nLayers = 1000000 is not a plausible int (allowed 1 to 12)"),
    ({"scoreDropoutProb": 2.0}, "scoreDropoutProb = 2.0 is not a plausible float"),
    ({"f_max": 30000}, "f_max <= fs / 2"),
    ({"windowSize": 512, "hopSize": 1024}, "windowSize = 512 is shorter than hopSize"),
    ({"segmentSizeInSecond": 60, "hopSize": 64}, "frames, over 2048"),
    ({"enabledAttn": ["F"] * 1000}, "is not a plausible list"),
])
def test_conf_values_are_bounded(tmp_path, changes, message):
    from mt3_demo.models.transkun import read_config

    folder = conf_folder(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_config(folder / "2.0.conf")


@pytest.mark.parametrize("text, message", [
    ("[" * 30_000 + "]" * 30_000, "nests its values too deeply"),  # deeper than the parser goes
    ('{"Model": ' * 100_000 + "1" + "}" * 100_000, "bytes; a model .conf is about 1 KB"),
    ("{" + " " * 70_000 + "}", "bytes; a model .conf is about 1 KB"),
])
def test_a_hostile_conf_file_is_refused_before_parsing_or_by_it(tmp_path, text, message):
    from mt3_demo.models.transkun import read_config

    folder = conf_folder(tmp_path, text=text)
    with pytest.raises(CheckpointError, match=message):
        read_config(folder / "2.0.conf")


def test_a_bad_conf_through_the_cli_is_exit_4_naming_the_file(capsys, song, tmp_path):
    folder = conf_folder(tmp_path, fs=0)
    code, err = cli(capsys, "transcribe", str(song), "--model", "transkun", "--checkpoint", str(folder))
    assert code == 4 and "2.0.conf: fs = 0" in err and "Traceback" not in err and str(tmp_path) not in err


# ------------------------------------------------------------------------------------------------
# 10. No absolute server path in a message


def test_a_missing_reference_is_named_without_its_folder(capsys, song, tmp_path):
    missing = tmp_path / "nowhere" / "ref.mid"
    code, err = cli(capsys, "compare", str(song), "--models", "transkun", "--reference", str(missing),
                    "--out", str(tmp_path / "o"))
    assert code == 3 and "'ref.mid' does not exist" in err and str(tmp_path) not in err


def test_gradio_refusals_lose_their_paths():
    import asyncio

    from starlette.exceptions import HTTPException

    from mt3_demo.ui.server_errors import http_exception_handler, scrub_paths

    cwd = os.getcwd()
    text = (f"Cannot move {cwd}/recording.wav to the gradio cache dir because it was not uploaded by a user. "
            f"Use the current working directory ({cwd}) or /tmp/gradio/abc/x.wav")
    assert scrub_paths(text).startswith("Cannot move recording.wav to the gradio cache dir")
    assert cwd not in scrub_paths(text) and "/tmp" not in scrub_paths(text)
    assert scrub_paths("see https://huggingface.co/a/b and 3/4") == "see https://huggingface.co/a/b and 3/4"
    response = asyncio.run(http_exception_handler(None, HTTPException(400, detail=text)))
    assert response.status_code == 400 and cwd.encode() not in response.body


# ------------------------------------------------------------------------------------------------
# 11. `compare --checkpoints DIR` is `MT3_DEMO_CHECKPOINTS=DIR` for that run, transkun included


@pytest.fixture
def test_root(tmp_path) -> Path:
    """The tiny test checkpoints in the <root>/<model_id>/ layout (README: "the test weights");
    no transkun folder, so transkun keeps its wheel's weights."""
    root = tmp_path / "ck"
    for model, files in {"mt3": [MT3_PTH, MT3_CONFIG],
                         "mr_mt3": [FIXTURES / "mr_mt3" / "set_b" / "model.ckpt",
                                    FIXTURES / "mr_mt3" / "set_b" / "config.json"],
                         "yourmt3": [FIXTURES / "yourmt3" / "set_a" / "tiny_model" / "last.ckpt"]}.items():
        (root / model).mkdir(parents=True)
        for f in files:
            (root / model / f.name).symlink_to(f)
    return root


def compare_weights(out: Path) -> dict[str, str]:
    import json

    models = json.loads((out / "results.json").read_text())["models"]
    assert all("error" not in m for m in models.values()), models
    return {m: entry["weights"] for m, entry in models.items()}


ALL_FOUR = "transkun,mt3,mr_mt3,yourmt3"


def test_compare_with_checkpoints_runs_every_model_as_the_variable_does(capsys, tmp_path, test_root, monkeypatch):
    audio = tmp_path / "clip.wav"
    sf.write(str(audio), (0.1 * np.sin(np.arange(16000) / 7)).astype(np.float32), 16000)
    monkeypatch.delenv("MT3_DEMO_CHECKPOINTS", raising=False)
    code, err = cli(capsys, "compare", str(audio), "--models", ALL_FOUR, "--checkpoints", str(test_root),
                    "--out", str(tmp_path / "flag"), "--no-synth", "--max-tokens", "16")
    assert code == 0, err
    by_flag = compare_weights(tmp_path / "flag")
    monkeypatch.setenv("MT3_DEMO_CHECKPOINTS", str(test_root))
    code, err = cli(capsys, "compare", str(audio), "--models", ALL_FOUR,
                    "--out", str(tmp_path / "variable"), "--no-synth", "--max-tokens", "16")
    assert code == 0, err
    assert by_flag == compare_weights(tmp_path / "variable")
    assert by_flag["transkun"] == "official (pip package)"  # no <root>/transkun/: the wheel's weights
    assert by_flag["mt3"] == "test: mt3.pth" and by_flag["yourmt3"] == "test: last.ckpt"


def test_transkun_looks_in_the_root_like_every_model(tmp_path):
    from mt3_demo.checkpoints import Sources
    from mt3_demo.models import transkun

    wheel = transkun.resolve(None)
    root = tmp_path / "ck"
    assert transkun.resolve(None, sources=Sources(root)) == wheel  # no folder
    (root / "transkun").mkdir(parents=True)
    assert transkun.resolve(None, sources=Sources(root)) == wheel  # a folder that holds nothing
    (root / "transkun" / "2.0.conf").write_text((wheel / "2.0.conf").read_text())
    with pytest.raises(CheckpointError, match=r"2\.0\.pt not found in transkun/") as e:
        transkun.resolve(None, sources=Sources(root))  # half placed: an error, not the wheel's weights
    assert e.value.fix and str(tmp_path) not in str(e.value)
    (root / "transkun" / "2.0.pt").symlink_to(wheel / "2.0.pt")
    assert transkun.resolve(None, sources=Sources(root)) == root / "transkun"
    assert transkun.resolve(wheel, sources=Sources(root)) == wheel  # --checkpoint comes first


def test_compare_reads_transkun_from_the_checkpoints_folder(capsys, song, tmp_path):
    """The root's transkun/ is what runs: a bad .conf there is that model's error naming it (the
    wheel's is fine); compare reports each model's failure on its line and exits 1 when none ran."""
    root = tmp_path / "ck"
    root.mkdir()
    conf_folder(tmp_path, fs=0).rename(root / "transkun")
    code, err = cli(capsys, "compare", str(song), "--models", "transkun", "--checkpoints", str(root),
                    "--out", str(tmp_path / "o"), "--no-synth")
    line = next(ln for ln in err.splitlines() if ln.startswith("transkun: error:"))
    assert code == 1 and "2.0.conf: fs = 0" in line and str(tmp_path) not in line


def test_transkun_placed_by_hand_is_labelled_yours(tmp_path):
    """Only the wheel's own folder is "from its pip package"; a folder placed by hand (under the
    root, or --checkpoint) is the user's, as for every other model."""
    from mt3_demo.manager import ModelManager
    from mt3_demo.models import transkun

    root = tmp_path / "ck"
    root.mkdir()
    settings = Settings(checkpoints_root=root, hub_offline=True)
    assert ModelManager(device=torch.device("cpu"), settings=settings).availability("transkun").weights == \
        "weights from its pip package"
    (root / "transkun").mkdir()
    for name in ("2.0.pt", "2.0.conf"):
        (root / "transkun" / name).symlink_to(transkun.wheel_folder() / name)
    assert ModelManager(device=torch.device("cpu"), settings=settings).availability("transkun").weights == \
        "your checkpoint: transkun"
