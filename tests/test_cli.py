"""CLI: exit codes, one-line errors, the documented JSON schema, the compare bundle.

Runs the real embedded model (transkun) on a short excerpt of the piano example.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import mir_eval  # noqa: F401 - imported to fail early when the metrics stack is missing
import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import torch

from conftest import EXAMPLES, ROOT
from mt3_demo.cli import EXIT_AUDIO, EXIT_CHECKPOINT, EXIT_OK, EXIT_USAGE, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mt3_demo", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def piano_excerpt(tmp_path_factory):
    """The first 6 s of the piano example, with its ground truth cut to match."""
    x, sr = sf.read(EXAMPLES / "piano_cschumann_polonaise.wav", dtype="float32")
    folder = tmp_path_factory.mktemp("excerpt")
    wav = folder / "piano6.wav"
    sf.write(wav, x[: 6 * sr], sr)
    midi = pretty_midi.PrettyMIDI(str(EXAMPLES / "piano_cschumann_polonaise.mid"))
    for inst in midi.instruments:
        inst.notes = [n for n in inst.notes if n.start < 5.8]
        for n in inst.notes:
            n.end = min(n.end, 6.0)
    ref = folder / "piano6.mid"
    midi.write(str(ref))
    return wav, ref


@pytest.mark.slow
def test_transcribe_writes_json_midi_png(piano_excerpt, tmp_path):
    wav, _ = piano_excerpt
    out_json, out_mid, out_png = tmp_path / "o.json", tmp_path / "o.mid", tmp_path / "o.png"
    proc = run_cli("transcribe", str(wav), "--model", "transkun", "--json", str(out_json),
                   "--midi", str(out_mid), "--png", str(out_png))
    assert proc.returncode == EXIT_OK, proc.stderr
    data = json.loads(out_json.read_text())
    assert {"model", "device", "audio_seconds", "timings", "notes"} <= set(data)
    assert data["model"] == "transkun" and data["device"] == "cpu"
    assert data["audio_seconds"] == pytest.approx(6.0, abs=1e-3)
    assert set(data["timings"]) == {"load_s", "inference_s", "rtf"} and data["timings"]["rtf"] > 0
    assert len(data["notes"]) > 10
    note = data["notes"][0]
    assert set(note) == {"onset", "offset", "pitch", "velocity", "program", "is_drum"}
    assert all(0 <= n["onset"] <= n["offset"] <= 6.5 and 21 <= n["pitch"] <= 108 for n in data["notes"])
    midi = pretty_midi.PrettyMIDI(str(out_mid))
    assert sum(len(i.notes) for i in midi.instruments) == len(data["notes"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "RTF" in proc.stderr  # the one-line summary


@pytest.mark.slow
def test_compare_bundle_with_reference_scores(piano_excerpt, tmp_path, capsys):
    wav, ref = piano_excerpt
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.mid").write_bytes(b"not from this run")
    code = main(["compare", str(wav), "--models", "transkun,mt3", "--reference", str(ref),
                 "--out", str(out), "--no-synth"])
    assert code == EXIT_OK  # one model worked; the other is reported, not fatal
    data = json.loads((out / "results.json").read_text())
    tk = data["models"]["transkun"]
    assert tk["weights"] == "official (pip package)"  # every result names its weights
    # The scores in the terminal: a header and one row per scored model, the F1s of results.json.
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("model "))
    row = printed[header + 1].split()
    assert row[0] == "Transkun" and "onset+offset F1" in printed[header]
    assert f"{tk['scores']['onset']['f1']:.3f}" in row and f"{tk['scores']['program_aware']['f1']:.3f}" in row
    assert "error" in data["models"]["mt3"]  # no MT3 weights offline: a clear error, not a crash
    assert (out / tk["files"]["midi"]).is_file() and (out / tk["files"]["png"]).is_file()
    # A piano model on a rendered piano clip: onsets nearly all right.
    assert tk["scores"]["onset"]["f1"] > 0.9
    assert set(tk["scores"]) >= {"onset", "onset_offset", "program_aware"}
    assert data["agreement"]["models"] == ["transkun"]
    assert data["agreement"]["onset_f1"] == [[1.0]]
    import zipfile

    (bundle,) = out.glob("*__mt3-demo-report.zip")
    names = sorted(n.split("/", 1)[-1] for n in zipfile.ZipFile(bundle).namelist())
    stems = sorted(n for n in names if n.startswith("stems/"))
    assert sorted(set(names) - set(stems)) == ["results.json", "summary.md", "transkun.mid", "transkun.png",
                                               "transkun_diff.png"]
    assert stems and all(n.startswith("stems/transkun/") and n.endswith(".mid") for n in stems)
    assert (out / "transkun__stems.zip").is_file()
    # Instrument leakage, with the reference: the keys of issue 12's results.json shape.
    inst = tk["instruments"]
    assert set(inst) == {"programs", "count", "drums", "reference_count", "detection", "family_detection",
                         "leaked", "missed"}
    assert inst["count"] == len(stems)  # one stem per instrument
    summary = (out / "summary.md").read_text()
    assert "Transkun" in summary and "onset F1" in summary and "error: mt3" in summary
    assert "| official (pip package) |" in summary
    assert "detection P / R / F1" in summary


def test_bad_audio_exit_code_and_one_line(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio at all")
    proc = run_cli("transcribe", str(bad), "--model", "transkun")
    assert proc.returncode == EXIT_AUDIO
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_file_and_unknown_model(tmp_path, capsys):
    assert main(["transcribe", str(tmp_path / "missing.wav")]) == EXIT_AUDIO
    assert "not found" in capsys.readouterr().err
    wav = tmp_path / "t.wav"
    sf.write(wav, 0.1 * np.ones(16000), 16000)
    assert main(["transcribe", str(wav), "--model", "nope"]) == EXIT_USAGE  # a usage error, not a checkpoint
    assert "Unknown model 'nope'" in capsys.readouterr().err
    assert main(["compare", str(wav), "--models", "transkun,nope", "--out", str(tmp_path / "o")]) == EXIT_USAGE
    assert "Unknown model 'nope'" in capsys.readouterr().err


def test_model_without_weights_says_how_to_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MT3_DEMO_CHECKPOINTS", raising=False)
    wav = tmp_path / "t.wav"
    sf.write(wav, 0.1 * np.ones(16000), 16000)
    assert main(["transcribe", str(wav), "--model", "mt3"]) == EXIT_CHECKPOINT
    err = capsys.readouterr().err
    assert "MT3_DEMO_CHECKPOINTS" in err and "--checkpoint" in err


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["transcribe"])
    assert e.value.code == EXIT_USAGE
    wav = str(EXAMPLES / "piano_cschumann_polonaise.wav")
    assert main(["transcribe", wav, "--device", "gpu"]) == EXIT_USAGE
    assert "not a device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["transcribe", wav, "--device", "cuda"]) == EXIT_USAGE
        assert "CUDA is not available" in capsys.readouterr().err


def test_models_command_lists_every_model():
    proc = run_cli("models")
    assert proc.returncode == EXIT_OK
    assert "transkun" in proc.stdout and "ready" in proc.stdout
