"""With checkpoints present, every model is listed as ready and all run side by side on one clip.

The tiny upstream-format fixture checkpoints stand in for the real files: they are laid out exactly
as a user would lay out the real ones under $MT3_DEMO_CHECKPOINTS.
"""
from __future__ import annotations

import json
import shutil
import zipfile

import pretty_midi
import pytest
import torch

from conftest import FIXTURES
from mt3_demo import pipeline, writers
from mt3_demo.audio import load_clip
from mt3_demo.manager import ModelManager
from mt3_demo.options import MRMT3Decode, MT3Decode, Settings, YourMT3Decode

MT3_FAMILY = ["mt3", "mr_mt3", "yourmt3"]


@pytest.fixture
def checkpoint_root(tmp_path):
    root = tmp_path / "checkpoints"
    for model_id, files in {
        "mt3": [FIXTURES / "mt3/tiny_model/mt3.pth", FIXTURES / "mt3/tiny_model/config.json"],
        "mr_mt3": [FIXTURES / "mr_mt3/set_b/model.ckpt", FIXTURES / "mr_mt3/set_b/config.json"],
        "yourmt3": [FIXTURES / "yourmt3/set_a/tiny_model/last.ckpt"],
    }.items():
        (root / model_id).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / model_id / f.name)
    return root


@pytest.fixture
def settings(checkpoint_root):
    """The checkpoints placed by hand, the Hub never asked."""
    return Settings(checkpoints_root=checkpoint_root, hub_offline=True)


def test_all_models_ready_and_selected_by_default(settings):
    manager = ModelManager(device=torch.device("cpu"), settings=settings)
    assert manager.import_errors == {}
    assert {m: manager.availability(m).status for m in manager.model_ids()} == {
        "transkun": "ready", "mt3": "ready", "mr_mt3": "ready", "yourmt3": "ready"}
    assert manager.default_selection() == ["mt3", "mr_mt3", "yourmt3", "transkun"]


def test_mt3_family_side_by_side(settings, tmp_path):
    manager = ModelManager(device=torch.device("cpu"), settings=settings)
    decode = {"mt3": MT3Decode(max_tokens=24), "mr_mt3": MRMT3Decode(max_tokens=24),
              "yourmt3": YourMT3Decode(max_tokens=24)}
    clip = load_clip(FIXTURES / "mr_mt3/set_b/audio.wav")
    events = []
    results = list(pipeline.transcribe_each(clip, MT3_FAMILY, manager, tmp_path / "run",
                                            on_progress=lambda m, f, d: events.append((m, f)), listening=(),
                                            decode=decode))
    assert [r.model_id for r in results] == MT3_FAMILY
    for r in results:
        assert r.ok, r.error
        assert r.transcription.inference_seconds > 0 and r.transcription.load_seconds > 0
        assert r.transcription.tokens  # token models report their raw ids
        midi = pretty_midi.PrettyMIDI(str(r.files["midi"]))
        assert sum(len(i.notes) for i in midi.instruments) == len(r.transcription.notes)
        assert r.files["png"].read_bytes()[:4] == b"\x89PNG"
        assert {m for m, _ in events} >= {r.model_id}
    assert results[1].transcription.info["frontend"] == "torchaudio"  # unknown file: upstream HEAD's
    assert results[0].transcription.info["compat"] == "magenta"
    run = pipeline.finish(results, clip)
    files = writers.write_run(run, tmp_path / "run")
    data = json.loads(files["results_json"].read_text())
    # YourMT3's card and results.json name the checkpoint file (it used to read "lm_head").
    assert data["models"]["yourmt3"]["checkpoint"] == "last.ckpt"
    from mt3_demo.ui import render

    assert "checkpoint: last.ckpt" in render.stats_html(run.result("yourmt3"))
    assert set(data["models"]) == set(MT3_FAMILY)
    assert data["agreement"]["models"] == MT3_FAMILY
    matrix = data["agreement"]["onset_f1"]
    assert all(matrix[i][i] == 1.0 for i in range(3))
    assert all(matrix[i][j] == matrix[j][i] for i in range(3) for j in range(3))
    entries = zipfile.ZipFile(files["zip"]).namelist()
    names = sorted(n.split("/")[-1] for n in entries if "/stems/" not in n)
    assert names == sorted(["agreement.png", "results.json", "summary.md"]
                           + [f"{m}.{ext}" for m in MT3_FAMILY for ext in ("mid", "png")])
    # One stem per instrument a model found (no reference: counts only, no diff pictures).
    for m in MT3_FAMILY:
        stems = [n for n in entries if f"/stems/{m}/" in n]
        assert len(stems) == data["models"][m]["instruments"]["count"]
        assert "detection" not in data["models"][m]["instruments"]
