"""One pipeline, one set of writers: CLI ``transcribe``, CLI ``compare`` and the UI's API give the
same MIDI bytes and the same JSON for the same input (issue 10); output paths are checked before
any work (issue 13.9); results and messages name files, never server paths (issue 13.10).

The tiny MT3 fixture (kunato mode, 63 tokens) stands in for a real model: deterministic and fast.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES
from mt3_demo.cli import EXIT_OK, EXIT_USAGE, main
from mt3_demo.manager import ModelManager
from mt3_demo.options import MT3Decode, MT3Options, Settings

TINY = FIXTURES / "mt3" / "tiny_model"
FLAGS = ["--compat", "kunato", "--max-tokens", "63", "--device", "cpu"]
# Measured, not computed: they differ from run to run.
VOLATILE = {"timings", "stage_timings", "files", "audio", "warnings", "display_name"}


@pytest.fixture
def wav(tmp_path) -> Path:
    path = tmp_path / "inputs" / "signal_a.wav"
    path.parent.mkdir()
    shutil.copy(FIXTURES / "mt3" / "logmel" / "signal_a.wav", path)
    return path


def stable(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in VOLATILE}


def test_transcribe_compare_and_ui_write_the_same_midi_and_json(wav, tmp_path, monkeypatch):
    from mt3_demo.ui import handlers

    one = tmp_path / "one"
    assert main(["transcribe", str(wav), "--model", "mt3", "--checkpoint", str(TINY), *FLAGS,
                 "--midi", str(one / "mt3.mid"), "--json", str(one / "mt3.json")]) == EXIT_OK
    reference = one / "mt3.mid"  # any MIDI will do: both scored runs must agree on the scores
    assert main(["compare", str(wav), "--models", "mt3", "--checkpoints", str(TINY), *FLAGS,
                 "--reference", str(reference), "--out", str(tmp_path / "cmp"), "--no-synth"]) == EXIT_OK
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # Gradio's own
    manager = ModelManager(device=torch.device("cpu"), checkpoints={"mt3": TINY},
                           options={"mt3": MT3Options(compat="kunato")}, decode={"mt3": MT3Decode(max_tokens=63)},
                           settings=Settings(upload_dir=tmp_path / "gradio"))
    *_, (midis, pngs, results, zip_path) = handlers.transcribe_api(manager, 600.0, str(wav), ["mt3"], str(reference))

    transcribed = json.loads((one / "mt3.json").read_text())
    compared = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert transcribed["notes"], "the fixture run has notes: the comparison must not be vacuous"
    midi_bytes = (one / "mt3.mid").read_bytes()
    assert (tmp_path / "cmp" / "mt3.mid").read_bytes() == midi_bytes
    assert Path(midis[0]).read_bytes() == midi_bytes
    assert stable(compared["models"]["mt3"]) == stable(results["models"]["mt3"])
    assert compared["models"]["mt3"]["scores"]["onset"]["f1"] == 1.0  # its own notes as the reference
    # Run-level analyses (scores and instrument leakage against the reference) exist only in a compare run.
    assert {k: v for k, v in stable(compared["models"]["mt3"]).items() if k not in ("scores", "instruments")} \
        == stable(transcribed)
    assert compared["models"]["mt3"]["instruments"]["detection"]["f1"] == 1.0  # its own notes as the reference
    assert {k: v for k, v in compared.items() if k not in ("created", "models")} == \
        {k: v for k, v in results.items() if k not in ("created", "models")}
    # The API returns what it wrote: its results.json equals the one in its report folder.
    assert json.loads((Path(zip_path).parent / "results.json").read_text()) == results


def test_results_and_errors_name_files_not_server_paths(wav, tmp_path, capsys):
    """Issue 13.10: results.json carried "audio": "<server temp path>" and checkpoint errors
    absolute paths."""
    out = tmp_path / "run"
    code = main(["compare", str(wav), "--models", "mt3,mr_mt3", "--checkpoints", str(TINY), *FLAGS,
                 "--out", str(out), "--no-synth"])
    assert code == EXIT_OK  # mt3 ran; mr_mt3 found no file there and says where to put one
    text = (out / "results.json").read_text()
    data = json.loads(text)
    assert data["audio"] == "signal_a.wav"
    # --checkpoints is $MT3_DEMO_CHECKPOINTS for the run: the answer names <root>/mr_mt3/, no folder of ours
    assert "weights not on this machine" in data["models"]["mr_mt3"]["error"].lower()
    assert "$MT3_DEMO_CHECKPOINTS/mr_mt3/" in data["models"]["mr_mt3"]["error"]
    assert data["models"]["mt3"]["files"]["midi"] == "mt3.mid"
    for server_path in (str(tmp_path), str(TINY), str(FIXTURES)):
        assert server_path not in text
    assert str(TINY) not in capsys.readouterr().err
    assert main(["transcribe", str(wav), "--model", "mt3", "--checkpoint", str(tmp_path / "nowhere")]) == 4
    assert str(tmp_path) not in capsys.readouterr().err


@pytest.fixture
def nothing_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran before the output paths were checked")

    monkeypatch.setattr("mt3_demo.pipeline.transcribe_one", refuse)
    monkeypatch.setattr("mt3_demo.pipeline.transcribe_each", refuse)


@pytest.mark.parametrize("flag", ["--json", "--midi", "--png"])
def test_transcribe_output_paths_checked_before_work(wav, tmp_path, capsys, nothing_runs, flag):
    """Issue 13.9: `--json /tmp` (a folder) or a path under a file failed only after the whole
    transcription, with exit 1."""
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    for bad in (tmp_path, a_file / "out.bin"):
        assert main(["transcribe", str(wav), "--model", "mt3", "--checkpoint", str(TINY), flag, str(bad)]) \
            == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith("error: ") and flag in err and "Traceback" not in err


def test_compare_out_checked_before_work(wav, tmp_path, capsys, nothing_runs):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    for bad in (a_file, a_file / "sub"):
        assert main(["compare", str(wav), "--models", "mt3", "--out", str(bad)]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert "--out" in err and "Traceback" not in err
