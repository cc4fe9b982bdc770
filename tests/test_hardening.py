"""Issue 13: checkpoint integrity and hostile checkpoints (items 1–3).

Every hostile file is built here, in tmp_path, from the tiny fixtures (or the transkun wheel's own
weights); nothing malicious is committed.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, serve_mt3_from_fake_hub
from mt3_demo.checkpoints import (CheckpointError, HubFile, read_checkpoint, resolve_file,
                                  sha256_file, verify_sha256)
from mt3_demo.cli import EXIT_CHECKPOINT, main

MT3_PTH = FIXTURES / "mt3" / "tiny_model" / "mt3.pth"
MT3_CONFIG = FIXTURES / "mt3" / "tiny_model" / "config.json"
MR_MT3_CKPT = FIXTURES / "mr_mt3" / "model.ckpt"
YMT3_CKPT = FIXTURES / "yourmt3" / "set_a" / "tiny_model" / "last.ckpt"
AUDIO = FIXTURES / "mr_mt3" / "audio.wav"


def wheel_folder() -> Path:
    from mt3_demo.models import transkun

    return transkun.resolve(None)


# ------------------------------------------------------------------------------------------------
# 1. sha256 pins: no trust on disk, the loaded bytes are the verified ones, the probe is honest


def wait_for_new_ctime(path: Path) -> None:
    """Return once the kernel's file clock has moved past ``path``'s ctime (it ticks coarsely), so
    the next write to ``path`` gets a different ctime — as any change made after a hash does."""
    probe = path.with_name(path.name + ".clock")
    before = path.stat().st_ctime_ns
    while True:
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns != before:
            probe.unlink()
            return


def test_sidecar_is_neither_written_nor_trusted(tmp_path):
    good, other = tmp_path / "good.bin", tmp_path / "other.bin"
    good.write_bytes(b"the published bytes")
    other.write_bytes(b"something else, same size")
    expected = sha256_file(good)
    verify_sha256(good, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.bin", "other.bin"]  # nothing written
    # The old bypass: a forged "<file>.sha256-ok" stamp (hash + size + mtime) beside another file.
    st = other.stat()
    (tmp_path / "other.bin.sha256-ok").write_text(f"{expected}:{st.st_size}:{int(st.st_mtime)}")
    with pytest.raises(CheckpointError, match="other.bin is corrupt or not the published file"):
        verify_sha256(other, expected)


def test_in_place_change_keeping_size_and_mtime_is_caught(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"A" * 64)
    expected = sha256_file(f)
    verify_sha256(f, expected)  # hashed once, remembered in memory
    st = f.stat()
    wait_for_new_ctime(f)
    with open(f, "r+b") as fh:  # same size …
        fh.write(b"B")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # … and the same mtime, to the nanosecond
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(CheckpointError, match="sha256"):
        verify_sha256(f, expected)


@pytest.fixture
def pinned_mt3(tmp_path, monkeypatch):
    """MT3 resolving from a fake Hub cache whose pinned sha256 is the tiny fixture's."""
    cache = tmp_path / "hub"
    cache.mkdir()
    shutil.copy(MT3_PTH, cache / "mt3.pth")
    shutil.copy(MT3_CONFIG, cache / "config.json")
    return serve_mt3_from_fake_hub(monkeypatch, cache), cache / "mt3.pth"


def tamper(path: Path) -> None:
    """Other weights in place of the published file: a valid checkpoint, every weight scaled."""
    sd = torch.load(path, weights_only=True)
    torch.save({k: v * 2 for k, v in sd.items()}, path)


def test_bytes_swapped_after_resolution_are_refused_at_load(pinned_mt3):
    adapter, cached = pinned_mt3
    location = adapter.resolve(None)  # downloads (fake) and verifies
    assert adapter.load_model(location).dims.d_model > 0  # the genuine file loads
    tamper(cached)
    with pytest.raises(CheckpointError, match="mt3.pth is corrupt or not the published file"):
        adapter.load_model(location)


def test_probe_does_not_call_a_tampered_cache_file_ready(pinned_mt3, capsys):
    from mt3_demo.manager import ModelManager

    _, cached = pinned_mt3
    manager = ModelManager(device=torch.device("cpu"))
    assert manager.availability("mt3").status == "ready"
    tamper(cached)
    avail = manager.availability("mt3")
    assert avail.status == "unavailable" and "sha256" in avail.reason
    assert main(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mt3 "))
    assert "unavailable" in line and "ready" not in line.split("—")[0]
    # And the probe itself wrote nothing into the cache folder.
    assert sorted(p.name for p in cached.parent.iterdir()) == ["config.json", "mt3.pth"]


def test_probe_of_a_cached_published_file_hashes_it(tmp_path, monkeypatch):
    import huggingface_hub

    f = tmp_path / "model.ckpt"
    f.write_bytes(b"not the published bytes")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: str(f))
    hub = HubFile("someone/repo", "model.ckpt", sha256="ab" * 32)
    with pytest.raises(CheckpointError, match="sha256"):
        resolve_file("m", "model.ckpt", None, hub, fetch=False)


# ------------------------------------------------------------------------------------------------
# 2. transkun's .conf names no code


def gadget_folder(tmp_path: Path, module: str, class_name: str) -> Path:
    folder = tmp_path / "tk"
    folder.mkdir()
    (folder / "2.0.pt").symlink_to(wheel_folder() / "2.0.pt")
    conf = json.loads((wheel_folder() / "2.0.conf").read_text())
    conf["Model"]["module"], conf["Model"]["configClassName"] = module, class_name
    (folder / "2.0.conf").write_text(json.dumps(conf))
    return folder


def test_conf_cannot_import_or_call_anything(tmp_path, monkeypatch):
    from mt3_demo.models.transkun import SPEC

    # A module that leaves a mark if it is ever imported, and a callable that leaves one if called.
    (tmp_path / "gadget_mod.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(tmp_path / 'imported')!r}).write_text('x')\n"
        f"def run():\n    Path({str(tmp_path / 'called')!r}).write_text('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = gadget_folder(tmp_path, "gadget_mod", "run")
    with pytest.raises(CheckpointError, match="only Transkun's own model"):
        SPEC.build(SPEC.resolve(folder), torch.device("cpu"), SPEC.options_type())
    assert not (tmp_path / "imported").exists() and not (tmp_path / "called").exists()


def test_conf_gadget_through_the_cli_is_exit_4(tmp_path, capsys):
    folder = gadget_folder(tmp_path, "os", "abort")  # the example: used to abort (rc 134)
    assert main(["transcribe", str(AUDIO), "--model", "transkun", "--checkpoint", str(folder)]) == EXIT_CHECKPOINT
    err = capsys.readouterr().err
    assert "2.0.conf names module 'os'" in err and str(tmp_path) not in err


@pytest.mark.parametrize("key, value, message", [
    ("nLayers", "6", "nLayers = 6 is not a plausible int"),
    ("nHead", 10**9, "is not a plausible int"),
    ("enabledAttn", [{"module": "os"}], "is not a plausible list"),
    ("downsampleF", 1, "is not a plausible bool"),
])
def test_conf_values_must_be_plain_and_plausible(tmp_path, key, value, message):
    from mt3_demo.models.transkun import read_config

    conf = json.loads((wheel_folder() / "2.0.conf").read_text())
    conf["Model"]["config"][key] = value
    (tmp_path / "2.0.conf").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match=message):
        read_config(tmp_path / "2.0.conf")
    del conf["Model"]["config"][key]
    (tmp_path / "2.0.conf").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match=f"lacks the setting '{key}'"):
        read_config(tmp_path / "2.0.conf")


def test_genuine_conf_gives_the_wheel_config():
    from mt3_demo.models.transkun import read_config

    config = read_config(wheel_folder() / "2.0.conf")
    conf = json.loads((wheel_folder() / "2.0.conf").read_text())["Model"]["config"]
    assert vars(config) == {k: conf[k] for k in vars(config)}


# ------------------------------------------------------------------------------------------------
# 3. Corrupt checkpoints are checkpoint errors that name the file and the fault


def _floats(sd, fn):
    return {k: fn(v) if v.is_floating_point() else v for k, v in sd.items()}


def _one_inf(v):
    v = v.clone()
    v.view(-1)[0] = float("inf")
    return v


def _first_empty(sd):
    sd = dict(sd)
    sd[next(iter(sd))] = torch.zeros(0)
    return sd


def _matrix_as_vector(sd):
    sd = dict(sd)
    key = next(k for k, v in sd.items() if v.dim() == 2)
    sd[key] = sd[key].flatten()
    return sd


CORRUPTIONS = {  # name -> (state dict -> state dict, what the message must say)
    "int64": (lambda sd: _floats(sd, lambda v: v.to(torch.int64)), "holds int64 values"),
    "nan": (lambda sd: _floats(sd, lambda v: torch.full_like(v, float("nan"))), "NaN or infinite"),
    "inf_in_one": (lambda sd: _floats(sd, _one_inf), "holds 1 of .* NaN or infinite"),
    "first_empty": (_first_empty, r"is empty \(shape \(0,\)\)"),
    "matrix_as_vector": (_matrix_as_vector, "does not (fit|match) the model"),
}


def _mt3(folder: Path, corrupt):
    from mt3_demo.models.mt3 import adapter

    torch.save(corrupt(torch.load(MT3_PTH, weights_only=True)), folder / "mt3.pth")
    shutil.copy(MT3_CONFIG, folder / "config.json")
    return lambda: adapter.load_model(adapter.resolve(folder)), "mt3.pth"


def _mr_mt3(folder: Path, corrupt):
    from mt3_demo.models.mr_mt3 import checkpoint as ck

    sd = read_checkpoint(MR_MT3_CKPT)["state_dict"]
    torch.save({"state_dict": corrupt(sd)}, folder / "model.ckpt")
    return lambda: ck.load_model(ck.location_for_file(folder / "model.ckpt"), memory_length=4), "model.ckpt"


def _yourmt3(folder: Path, corrupt):
    from mt3_demo.models.yourmt3.model import load_model

    sd = read_checkpoint(YMT3_CKPT)["state_dict"]
    torch.save({"state_dict": corrupt(sd)}, folder / "last.ckpt")
    return lambda: load_model(folder / "last.ckpt"), "last.ckpt"


_TRANSKUN_SD: dict = {}


def _transkun(folder: Path, corrupt):
    from mt3_demo.models.transkun import SPEC

    if not _TRANSKUN_SD:
        _TRANSKUN_SD.update(torch.load(wheel_folder() / "2.0.pt", weights_only=True)["state_dict"])
    torch.save({"state_dict": corrupt(_TRANSKUN_SD)}, folder / "2.0.pt")
    shutil.copy(wheel_folder() / "2.0.conf", folder / "2.0.conf")
    return lambda: SPEC.build(SPEC.resolve(folder), torch.device("cpu"), SPEC.options_type()), "2.0.pt"


ADAPTERS = {"mt3": _mt3, "mr_mt3": _mr_mt3, "yourmt3": _yourmt3, "transkun": _transkun}


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_weights_are_named_checkpoint_errors(tmp_path, adapter, corruption):
    corrupt, message = CORRUPTIONS[corruption]
    load, name = ADAPTERS[adapter](tmp_path, corrupt)
    with pytest.raises(CheckpointError, match=message) as e:
        load()
    assert name in str(e.value) and str(tmp_path) not in str(e.value)


def test_arbitrary_bytes_are_unreadable_checkpoints(tmp_path):
    """5000 random bytes: some seeds used to escape torch's unpickler as IndexError/KeyError."""
    f = tmp_path / "mt3.pth"
    for seed in range(64):
        f.write_bytes(random.Random(seed).randbytes(5000))
        with pytest.raises(CheckpointError, match="mt3.pth could not be read"):
            read_checkpoint(f)


@pytest.mark.parametrize("model, filename", [("mr_mt3", "passwd"), ("mt3", "mt3.pth"),
                                              ("yourmt3", "last.ckpt"), ("transkun", "2.0.pt")])
def test_cli_exit_4_for_a_text_file_as_checkpoint(tmp_path, capsys, model, filename):
    """``--checkpoint /etc/passwd`` for mr_mt3 used to end as "IndexError" (exit 1)."""
    f = tmp_path / filename
    f.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    if model == "transkun":
        shutil.copy(wheel_folder() / "2.0.conf", tmp_path / "2.0.conf")
    if model == "mt3":
        shutil.copy(MT3_CONFIG, tmp_path / "config.json")
    assert main(["transcribe", str(AUDIO), "--model", model, "--checkpoint", str(f)]) == EXIT_CHECKPOINT
    err = capsys.readouterr().err
    assert f"checkpoint {filename} could not be read" in err and str(tmp_path) not in err


def test_cli_exit_4_for_int64_weights(tmp_path, capsys):
    """Weights cast to int64 used to load silently and give 0 notes (exit 0)."""
    load, _ = _mt3(tmp_path, CORRUPTIONS["int64"][0])
    assert main(["transcribe", str(AUDIO), "--model", "mt3", "--checkpoint", str(tmp_path)]) == EXIT_CHECKPOINT
    assert "holds int64 values" in capsys.readouterr().err


@pytest.mark.parametrize("config_text, message", [
    ('{"segmem_length": "sixty-four"}', "does not fit the model"),
    ('{"num_heads": [6]}', "does not fit the model"),
    ("not json", "could not read config.json beside the checkpoint"),
])
def test_mr_mt3_config_json_of_the_wrong_kind_is_a_checkpoint_error(tmp_path, config_text, message):
    from mt3_demo.models.mr_mt3 import checkpoint as ck

    shutil.copy(MR_MT3_CKPT, tmp_path / "model.ckpt")
    (tmp_path / "config.json").write_text(config_text)
    with pytest.raises(CheckpointError, match=message) as e:
        ck.load_model(ck.location_for_file(tmp_path / "model.ckpt"))
    assert str(tmp_path) not in str(e.value)
