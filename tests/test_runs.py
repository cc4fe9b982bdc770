"""Issue 13 item 7: per-request files are only what the request needs, rejected uploads are
deleted, and run storage is capped by ``MT3_DEMO_RUNS_MAX_MB``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mt3_demo import runs
from mt3_demo.options import RUNS_MAX_MB_ENV, Settings, read_env

sys.path.insert(0, str(Path(__file__).parent))
from test_manager import fake_spec  # noqa: E402


@pytest.fixture
def gradio_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))  # Gradio's own uploads (Settings.upload_dir: ours)
    return folder.resolve()


def make_run(root: Path, name: str, megabytes: float, age_s: float) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "x.bin").write_bytes(b"\0" * int(megabytes * 2**20))
    t = 1_000_000.0 - age_s
    os.utime(folder, (t, t))
    return folder


def test_prune_keeps_the_newest_runs_under_the_cap(gradio_dir):
    root = runs.runs_root(gradio_dir)
    assert root.parent == gradio_dir  # inside Gradio's folder: returned files are not copied again
    old, mid, new = (make_run(root, n, 1.0, age) for n, age in (("a", 300), ("b", 200), ("c", 100)))
    expired = make_run(root, "z", 0.01, runs.RUN_TTL_S + 1)
    deleted = runs.prune(root, max_bytes=int(2.5 * 2**20), now=1_000_000.0)
    assert set(deleted) == {expired, old}
    assert mid.is_dir() and new.is_dir()
    assert runs.folder_bytes(root) <= 2.5 * 2**20


def test_runs_in_progress_are_never_pruned(gradio_dir):
    settings = Settings(runs_max_mb=0.5, upload_dir=gradio_dir)
    first = runs.new_run_dir(settings)
    (first / "big.bin").write_bytes(b"\0" * 2**20)  # already over the cap on its own
    second = runs.new_run_dir(settings)  # prunes, but the first run is still going
    assert first.is_dir() and second.is_dir()
    runs.release(first)
    runs.release(second)
    third = runs.new_run_dir(settings)
    assert not first.exists() and third.is_dir()
    runs.release(third)


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf", "lots", "1e308"])
def test_bad_cap_falls_back_to_the_default_not_unbounded(value):
    settings, problems = read_env({RUNS_MAX_MB_ENV: value})
    assert len(problems) == 1 and RUNS_MAX_MB_ENV in problems[0]
    assert runs.runs_max_bytes(settings.runs_max_mb) == int(runs.DEFAULT_RUNS_MAX_MB * 2**20)
    settings, _ = read_env({RUNS_MAX_MB_ENV: "64"})
    assert runs.runs_max_bytes(settings.runs_max_mb) == 64 * 2**20


def test_discard_upload_deletes_only_uploads(gradio_dir, tmp_path):
    upload = gradio_dir / "0123abcd" / "song.wav"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"RIFF")
    outside = tmp_path / "examples" / "song.wav"
    outside.parent.mkdir()
    outside.write_bytes(b"RIFF")
    run_file = runs.runs_root(gradio_dir) / "r1" / "transkun.mid"
    run_file.parent.mkdir()
    run_file.write_bytes(b"MThd")
    assert runs.discard_upload(upload, gradio_dir) and not upload.parent.exists()
    assert not runs.discard_upload(outside, gradio_dir) and outside.is_file()
    assert not runs.discard_upload(run_file, gradio_dir) and run_file.is_file()
    assert not runs.discard_upload(None, gradio_dir) and not runs.discard_upload(gradio_dir / "missing.wav", gradio_dir)


# ------------------------------------------------------------------------------------------------
# The app's request (ui.session, ui.handlers): what a request leaves on disk


@pytest.fixture
def manager(gradio_dir):
    pytest.importorskip("gradio")  # mt3_demo.ui's package imports it
    from mt3_demo.manager import ModelManager

    return ModelManager(device=torch.device("cpu"), budget_mb=100.0, specs={"fake": fake_spec("fake")},
                        settings=Settings(upload_dir=gradio_dir))


def upload(gradio_dir: Path, name: str, data: bytes | None = None) -> Path:
    path = gradio_dir / "feedbeef" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        sf.write(str(path), (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    else:
        path.write_bytes(data)
    return path


def test_api_run_writes_no_audio_and_page_run_only_what_it_plays(manager, gradio_dir):
    from mt3_demo.ui import handlers, session

    audio = upload(gradio_dir, "tone.wav")
    *_, (midis, _, _, zip_path) = handlers.transcribe_api(manager, 600.0, str(audio), ["fake"], None)  # its last value
    api_dir = Path(zip_path).parent
    assert Path(midis[0]).parent == api_dir and not list(api_dir.glob("*.wav"))
    with session.start(str(audio), ["fake"], None, manager, 600.0) as request:
        (result,) = list(session.results(request, manager))  # the page's run
        session.finish(request, [result])
        assert request.out_dir in runs._active  # not prunable while it runs
    assert result.ok and sorted(p.name for p in request.out_dir.glob("*.wav")) == sorted(
        result.files[k].name for k in ("audio_matched", "mix"))  # the two the card plays
    assert "audio" not in result.files
    assert not runs._active  # both runs released: prunable from now on


def test_instrument_view_skips_a_pruned_run(manager, gradio_dir):
    from mt3_demo.ui import session

    audio = upload(gradio_dir, "tone.wav")
    with session.start(str(audio), ["fake"], None, manager, 600.0) as request:
        (result,) = list(session.results(request, manager))
    state = session.PageState(duration=request.clip.duration, results={0: result})
    assert session.instrument_png(state, 0, None, "All") == str(result.files["png"])
    runs.prune(runs.runs_root(gradio_dir), max_bytes=0)  # over any cap: the finished run goes
    assert not request.out_dir.exists()
    assert session.instrument_png(state, 0, None, "All") is None


def test_rejected_upload_is_deleted_at_once(manager, gradio_dir):
    from mt3_demo.ui import session

    bad = upload(gradio_dir, "notes.wav", b"this is text, not audio")
    with pytest.raises(session.AudioError):
        session.start(str(bad), ["fake"], None, manager, 600.0)
    assert not bad.exists()
    good = upload(gradio_dir, "tone.wav")
    bad_ref = gradio_dir / "cafe" / "ref.mid"
    bad_ref.parent.mkdir()
    bad_ref.write_bytes(b"not midi")
    with pytest.raises(session.InputError):
        session.start(str(good), ["fake"], str(bad_ref), manager, 600.0)
    assert not bad_ref.exists() and good.exists()  # only the rejected file goes
    assert not list(runs.runs_root(gradio_dir).iterdir())  # a rejected request opens no folder
