"""MR-MT3 adapter: end to end vs upstream (notes, tokens), registry, frontend defaults, CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mt3_demo.audio import Clip
from mt3_demo.checkpoints import CheckpointError, NotDownloaded, Sources
from mt3_demo.models.mr_mt3 import SPEC
from mt3_demo.models.mr_mt3 import checkpoint as ck
from mt3_demo.models.mr_mt3.adapter import default_frontend
from mt3_demo.models.mr_mt3.model import contiguous_decode
from mt3_demo.options import MRMT3Decode, MRMT3Options, OptionError

FIX = Path(__file__).parent / "fixtures" / "mr_mt3"
SETS = {"a": FIX, "b": FIX / "set_b"}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models decode with many small matmuls: one thread is faster than waiting for a second."""


def clip(folder: Path) -> Clip:
    x, sr = sf.read(folder / "audio.wav", dtype="float32")
    return Clip.from_array(x, sr)


def upstream_ids(e2e: dict) -> list[list[int]]:
    return [s.get("raw_ids", s.get("ids"))[1:] for s in e2e["segments"]]


@pytest.mark.parametrize("name", list(SETS))
def test_end_to_end_notes_and_tokens_equal_upstream(name):
    folder = SETS[name]
    e2e = json.loads((folder / "e2e.json").read_text())
    transcriber = SPEC.build(SPEC.resolve(folder), CPU, MRMT3Options(frontend=None))
    progress = []
    out = transcriber.transcribe(clip(folder), progress=lambda d, n: progress.append((d, n)))
    assert out.tokens == upstream_ids(e2e)
    assert progress[-1] == (3, 3)
    got = [(n.onset, n.offset, n.pitch, n.velocity, n.program, n.is_drum) for n in out.notes]
    want = [(n["onset"], n["offset"], n["pitch"], n["velocity"], n["program"], n["is_drum"]) for n in e2e["notes"]]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[0] == pytest.approx(w[0], abs=1e-9) and g[1] == pytest.approx(w[1], abs=1e-9)
        assert g[2:] == w[2:]
    assert (out.info["invalid_events"], out.info["dropped_events"]) == (e2e["invalid_events"], e2e["dropped_events"])
    cfg = json.loads((folder / "config.json").read_text())
    assert out.info["frontend"] == "torchaudio"  # unknown file: upstream HEAD, as the fixtures
    assert out.info["memory_length"] == cfg["segmem_length"]
    assert out.info["checkpoint"] == "model.ckpt"
    assert transcriber.num_segments(clip(folder)) == 3


def test_several_files_decoded_together_equal_one_by_one():
    t = SPEC.build(SPEC.resolve(SETS["a"]), CPU, MRMT3Options())
    a, b = clip(SETS["a"]), Clip.from_array(clip(SETS["a"]).samples[: 16000 * 3])
    with torch.inference_mode():
        both = contiguous_decode(t.model, [t.encode(a.samples), t.encode(b.samples)], 20)
    assert both[0] == t.transcribe(a, MRMT3Decode(max_tokens=20)).tokens
    assert both[1] == t.transcribe(b, MRMT3Decode(max_tokens=20)).tokens


def test_options_override_frontend_and_memory_length():
    t = SPEC.build(SPEC.resolve(SETS["b"]), CPU, MRMT3Options(frontend="torchaudio-legacy", memory_length=8))
    out = t.transcribe(clip(SETS["b"]), MRMT3Decode(max_tokens=5))
    assert (out.info["frontend"], out.info["frontend_source"]) == ("torchaudio-legacy", "user")
    assert (out.info["memory_length"], out.info["memory_length_source"]) == (8, "user")
    assert all(len(g) <= 5 for g in out.tokens)
    out = SPEC.build(SPEC.resolve(SETS["b"]), CPU, MRMT3Options(frontend="tf")).transcribe(clip(SETS["b"]),
                                                                                         MRMT3Decode(max_tokens=3))
    assert out.info["frontend"] == "tf" and len(out.tokens) == 3
    with pytest.raises(OptionError, match="frontend"):
        MRMT3Options(frontend="librosa")


def test_default_frontend_per_checkpoint_family():
    def frontend_for(name):
        return default_frontend(ck.Location(Path(name), known=ck.known_checkpoint(name)))[0]

    assert frontend_for("exp_segmemV2_prev_context=64_prevaug_frame=3.ckpt") == "torchaudio-legacy"
    assert frontend_for("exp_segmemV2_prev_context=0.ckpt") == "torchaudio-legacy"
    assert frontend_for("exp_segmemV2_prev_context=0_MT3_1e-5_ep100_norandom.ckpt") == "tf"
    assert frontend_for("model.ckpt") == "torchaudio"


def test_registry():
    default = ck.known_checkpoint(ck.DEFAULT_CHECKPOINT)
    assert default.name == "exp_segmemV2_prev_context=64_prevaug_frame=3.ckpt"
    assert (default.memory_length, default.frontend) == (64, "torchaudio-legacy")
    cont = ck.known_checkpoint("continual/exp_segmemV2_prev_context=0_MT3_1e-5_ep100_norandom.ckpt")
    assert cont.size_bytes == 582_511_409 and cont.sha256.startswith("74b26200") and cont.memory_length == 0
    assert cont.hub.filename.startswith("continual/") and cont.hub.repo_id == "gudgud1014/MR-MT3"
    for k in ck.KNOWN_CHECKPOINTS:  # every registry N agrees with the upstream file-name convention
        assert ck.memory_length_from_name(k.name) == k.memory_length
    assert SPEC.id == "mr_mt3" and SPEC.display_name == "MR-MT3 (memory-retaining)"


def published_folder(tmp_path: Path, names: list[str]) -> Path:
    """A folder of 'published' files (the tiny fixture weights under the real names) + heads only."""
    folder = tmp_path / "mr_mt3"
    folder.mkdir()
    for n in names:
        shutil.copy(SETS["a"] / "model.ckpt", folder / n)
    (folder / "config.json").write_text(json.dumps({"num_heads": 2}))
    return folder


def test_checkpoint_name_selects_a_known_file(tmp_path):
    folder = published_folder(tmp_path, ["exp_segmemV2_prev_context=32.ckpt", ck.DEFAULT_CHECKPOINT])
    loc = SPEC.resolve(folder)
    assert loc.name == ck.DEFAULT_CHECKPOINT  # the default first
    t = SPEC.build(loc, CPU, MRMT3Options())
    assert (t.checkpoint, t.memory_length, t.frontend) == (ck.DEFAULT_CHECKPOINT, 64, "torchaudio-legacy")
    by_name = MRMT3Options(checkpoint_name="exp_segmemV2_prev_context=32.ckpt")
    t = SPEC.build(SPEC.resolve(folder, by_name), CPU, by_name)  # the name is applied when resolving
    assert (t.checkpoint, t.memory_length, t.memory_length_source) == ("exp_segmemV2_prev_context=32.ckpt", 32, "registry")
    with pytest.raises(CheckpointError, match="unknown checkpoint name"):
        SPEC.resolve(folder, MRMT3Options(checkpoint_name="best.ckpt"))
    with pytest.raises(CheckpointError, match="no exp_segmemV2_prev_context=64.ckpt in"):
        SPEC.resolve(folder, MRMT3Options(checkpoint_name="exp_segmemV2_prev_context=64.ckpt"))


def test_resolve_default_from_checkpoints_root(tmp_path):
    folder = published_folder(tmp_path, ["exp_segmemV2_prev_context=64.ckpt"])
    loc = SPEC.resolve(None, None, True, Sources(root=tmp_path))  # the default is absent; another known file is here
    assert loc.path == folder / "exp_segmemV2_prev_context=64.ckpt" and loc.known.memory_length == 64


def test_resolve_without_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # huggingface_hub's own cache
    with pytest.raises((CheckpointError, NotDownloaded), match="exp_segmemV2_prev_context=64_prevaug_frame=3"):
        SPEC.resolve(None, MRMT3Options(), fetch=False, sources=Sources(root=tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        SPEC.resolve(tmp_path / "missing.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no .ckpt file"):
        SPEC.resolve(tmp_path / "empty")


def test_cli_reproduces_set_b_greedy_ids(tmp_path):
    from mt3_demo import cli

    out = tmp_path / "out.json"
    rc = cli.main(["transcribe", str(SETS["b"] / "audio.wav"), "--model", "mr_mt3", "--checkpoint",
                   str(SETS["b"]), "--frontend", "torchaudio", "--tokens", "--json", str(out), "--device", "cpu"])
    assert rc == 0
    result = json.loads(out.read_text())
    greedy = np.load(SETS["b"] / "greedy_ids.npy").tolist()
    assert result["tokens"] == [row[1: row.index(1, 1) + 1] for row in greedy]
    assert result["frontend"] == "torchaudio" and result["memory_length"] == 64


def test_max_tokens_is_checked_against_the_decoder_position_table():
    """Issue 21.12: MR-MT3's decoder has a 2048-row position table and the start token takes one row;
    a longer limit used to fail mid-run (IndexError, or a device-side assert on CUDA)."""
    assert MRMT3Decode(max_tokens=2047).max_tokens == 2047
    with pytest.raises(OptionError, match="max_tokens must be at least 1 and at most 2047, not 2048"):
        MRMT3Decode(max_tokens=2048)
    t = SPEC.build(SPEC.resolve(SETS["a"]), CPU, MRMT3Options())
    assert t.model.dims.max_positions == 2048 and t.max_tokens(MRMT3Decode()) == 1023
    with pytest.raises(OptionError, match="below 2048 for MR-MT3"):  # a checkpoint's own table, at run time
        t.max_tokens(_unchecked(max_tokens=2048))


def _unchecked(**fields) -> MRMT3Decode:
    """Decode options that skipped their own check (as a hand-made object could): the run checks again."""
    decode = object.__new__(MRMT3Decode)
    for name, value in {**vars(MRMT3Decode()), **fields}.items():
        object.__setattr__(decode, name, value)
    return decode
