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

from conftest import EXAMPLES, FIXTURES
from mt3_demo import checkpoints, reference, runs
from mt3_demo.checkpoints import CheckpointError, HubFile, safe_torch_load, sha256_file
from mt3_demo.notes import notes_from_midi

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
    with pytest.raises(reference.ReferenceError, match="50,000 notes"):
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
def gradio_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
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
    audio, _, ref = handlers.validate_inputs(validator_manager(), 2.0, str(bad), ["transkun"], str(good_ref))
    assert audio["is_valid"] is False and ref["is_valid"] is True
    assert not bad.exists() and not bad.parent.exists()  # Gradio's hash folder goes with it
    assert good_ref.exists()  # what passed stays: the request may be sent again with a new recording


@pytest.mark.parametrize("case", list(REFERENCE_REJECTIONS))
def test_validator_deletes_a_refused_reference(gradio_dir, case):
    from mt3_demo.ui import handlers

    audio = upload(gradio_dir, "a.wav")
    bad = upload(gradio_dir, "ref.mid", REFERENCE_REJECTIONS[case])
    checks = handlers.validate_inputs(validator_manager(), 600.0, str(audio), ["transkun"], str(bad))
    assert [c["is_valid"] for c in checks] == [True, True, False]
    assert "ref.mid" in checks[2]["message"] and str(gradio_dir) not in checks[2]["message"]
    assert not bad.exists() and audio.exists()


def test_a_refused_selection_deletes_no_upload(gradio_dir):
    from mt3_demo.ui import handlers

    audio, ref = upload(gradio_dir, "a.wav"), upload(gradio_dir, "ref.mid", PIANO_MID.read_bytes())
    checks = handlers.validate_inputs(validator_manager(), 600.0, str(audio), [], str(ref))
    assert [c["is_valid"] for c in checks] == [True, False, True]
    assert audio.exists() and ref.exists()


@pytest.mark.parametrize("case", list(AUDIO_REJECTIONS))
def test_upload_check_deletes_a_refused_recording(gradio_dir, case):
    from mt3_demo.ui import handlers

    bad = AUDIO_REJECTIONS[case](gradio_dir)
    note = handlers.check_upload(str(bad), 2.0)
    assert "a.wav" in note and not bad.exists()
    # Sent anyway: one sentence that says what happened, no path.
    (audio_check, _, _) = handlers.validate_inputs(validator_manager(), 2.0, str(bad), ["transkun"], None)
    assert "upload a recording again" in audio_check["message"] and str(gradio_dir) not in audio_check["message"]


def test_request_deletes_a_reference_of_another_recording(gradio_dir):
    """Past the validator (which does not know the length yet): a reference with no note inside
    the recording is refused by the request, and deleted."""
    from mt3_demo.ui import session

    audio = upload(gradio_dir, "a.wav", seconds=0.5)
    late = upload(gradio_dir, "late.mid", smf(b"\x83\x60" + notes_track(3)[1:]))  # first note at 1 s
    with pytest.raises(session.InputError, match="has no notes in the recording's 0.5 s"):
        session.start(str(audio), ["transkun"], str(late), validator_manager(), 600.0)
    assert not late.exists() and audio.exists()


def test_examples_and_files_outside_the_upload_folder_are_never_deleted(gradio_dir, tmp_path):
    from mt3_demo.ui import handlers

    outside = write(tmp_path, "mine.wav", b"not audio")
    handlers.validate_inputs(validator_manager(), 600.0, str(outside), ["transkun"], str(outside))
    handlers.check_upload(str(outside), 600.0)
    assert outside.exists()


# ------------------------------------------------------------------------------------------------
# 3. The sha256 pin: the bytes loaded are the bytes hashed


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """MT3 from a fake Hub cache laid out as huggingface_hub's: snapshots/<rev>/mt3.pth is a
    symlink to blobs/<hash>; the pinned sha256 is the genuine file's."""
    import huggingface_hub

    from mt3_demo.models.mt3 import adapter

    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snap.mkdir(parents=True)
    shutil.copy(MT3_PTH, blobs / "genuine")
    sd = torch.load(MT3_PTH, weights_only=True)
    torch.save({k: v * 2 for k, v in sd.items()}, blobs / "evil")  # a valid checkpoint, other weights
    (snap / "mt3.pth").symlink_to(blobs / "genuine")
    shutil.copy(MT3_CONFIG, snap / "config.json")

    def fake_download(repo_id, filename, **kw):
        if filename != "mt3.pth":
            raise FileNotFoundError(filename)
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(adapter, "HUB", HubFile("gudgud1014/MR-MT3", "mt3.pth", sha256=sha256_file(MT3_PTH)))
    monkeypatch.delenv("MT3_DEMO_CHECKPOINTS", raising=False)
    return adapter, snap / "mt3.pth", blobs, sd


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
