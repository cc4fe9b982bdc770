"""Checkpoint resolution, sha256 verification and the safe loader."""
from __future__ import annotations

import argparse
import gc
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES
from mt3_demo.checkpoints import (CheckpointError, HubFile, assignable, check_state_dict, copy_out_of_mapping,
                                  load_strict, read_checkpoint, resolve_file, safe_torch_load, sha256_file,
                                  Sources, verify_sha256)
from mt3_demo.options import read_env


def test_local_override_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MT3_DEMO_CHECKPOINTS", raising=False)
    f = tmp_path / "m.pth"
    f.write_bytes(b"abc")
    assert resolve_file("m", "m.pth", f) == f
    assert resolve_file("m", "m.pth", tmp_path) == f
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_file("m", "m.pth", tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no other.pth in"):
        resolve_file("m", "other.pth", tmp_path)


def test_a_wrong_checkpoint_path_says_what_is_wrong_and_the_fix_apart(tmp_path):
    """The reason and the fix are separate fields (the page folds the fix behind "details")."""
    from mt3_demo.models.mr_mt3 import checkpoint as mr_ck

    with pytest.raises(CheckpointError) as e:
        resolve_file("m", "m.pth", tmp_path / "missing")
    assert e.value.reason == "m: checkpoint path missing does not exist." and "check the path" in e.value.fix
    with pytest.raises(CheckpointError) as e:
        resolve_file("m", "other.pth", tmp_path)
    assert e.value.reason.startswith("m: no other.pth in") and "put other.pth in that folder" in e.value.fix
    (tmp_path / "a.ckpt").write_bytes(b"x")
    (tmp_path / "b.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError) as e:
        mr_ck.find_in_folder(tmp_path)
    assert "several .ckpt files (a.ckpt, b.ckpt)" in e.value.reason and e.value.fix == "pass the file itself."
    assert str(e.value).endswith("To fix: pass the file itself.") and str(tmp_path) not in str(e.value)


def test_env_folder(tmp_path):
    (tmp_path / "mt3").mkdir()
    (tmp_path / "mt3" / "mt3.pth").write_bytes(b"abc")
    root = read_env({"MT3_DEMO_CHECKPOINTS": str(tmp_path)})[0].checkpoints_root
    assert resolve_file("mt3", "mt3.pth", sources=Sources(root=root)) == tmp_path / "mt3" / "mt3.pth"


def test_sha256_mismatch_rejected(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"hello")
    good = sha256_file(f)
    verify_sha256(f, good)  # passes and leaves a stamp
    with pytest.raises(CheckpointError, match="corrupt or not the published file"):
        verify_sha256(f, "0" * 64)
    hub = HubFile("a/b", "w.bin", sha256="0" * 64)
    with pytest.raises(CheckpointError, match="sha256"):
        resolve_file("x", "w.bin", f, hub, verify_local=True)


def test_safe_load_refuses_arbitrary_objects(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, plain)
    assert torch.equal(safe_torch_load(plain)["state_dict"]["w"], torch.ones(2))
    ns = tmp_path / "ns.pt"
    torch.save({"hyper_parameters": argparse.Namespace(a=1)}, ns)
    with pytest.raises(CheckpointError, match="safe allow-list"):
        safe_torch_load(ns)
    assert safe_torch_load(ns, [argparse.Namespace])["hyper_parameters"].a == 1
    broken = tmp_path / "broken.pt"
    broken.write_bytes(plain.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        safe_torch_load(broken)


def test_strict_check_lists_missing_unexpected_and_shapes():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    sd = dict(net.state_dict())
    load_strict(net, sd, "ok")
    bad = dict(sd)
    del bad["0.bias"]
    bad["extra.weight"] = torch.zeros(1)
    bad["1.weight"] = torch.zeros(5, 5)
    with pytest.raises(CheckpointError) as e:
        load_strict(net, bad, "tiny")
    msg = str(e.value)
    assert "1 missing key(s): 0.bias" in msg and "1 unexpected key(s): extra.weight" in msg
    assert "1.weight: checkpoint (5, 5) vs model (1, 2)" in msg
    check_state_dict({"a": (1,)}, {"a": torch.zeros(1)}, "fine")


# ------------------------------------------------------------------------------------------------
# One copy of the weights: models built on the meta device, the checkpoint's tensors assigned


def file_mappings() -> list[tuple[int, int, str]]:
    """(start, end, path) of every file mapped into this process (Linux /proc/self/maps)."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0":  # inode 0: anonymous memory
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end, fields[5]))
    return out


linux_only = pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")


def test_assignable_converts_dtype_and_copies_only_views():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    fused = torch.randn(6, 4)
    sd = {"0.weight": fused[:3], "0.bias": torch.randn(3, dtype=torch.float64),
          "1.weight": torch.randn(3), "1.bias": torch.randn(3).expand(2, 3)[0],
          "1.running_mean": torch.randn(3), "1.running_var": torch.rand(3),
          "1.num_batches_tracked": torch.tensor(7)}
    out = assignable(net, sd)
    assert out["1.weight"] is sd["1.weight"]  # already fit: taken as it is, no copy
    assert out["0.weight"].untyped_storage().nbytes() == 3 * 4 * 4  # the view no longer holds all of `fused`
    assert torch.equal(out["0.weight"], fused[:3]) and out["1.bias"].is_contiguous()
    assert out["0.bias"].dtype == torch.float32 and torch.equal(out["0.bias"], sd["0.bias"].float())
    assert out["1.num_batches_tracked"].dtype == torch.int64
    net.load_state_dict(out, assign=True)
    assert net[0].bias.dtype == torch.float32 and isinstance(net[0].bias, torch.nn.Parameter)


@linux_only
def test_copy_out_of_mapping_releases_the_files_pages(tmp_path):
    sd = {f"w{i}": torch.randn(512, 512) for i in range(8)}  # 1 MiB each
    sd["alias"] = sd["w0"]
    torch.save({"state_dict": sd, "optimizer_states": [torch.randn(1024, 1024)]}, tmp_path / "x.ckpt")
    mapped = torch.load(tmp_path / "x.ckpt", mmap=True, weights_only=True)["state_dict"]

    def resident_kb() -> int:  # pages of the checkpoint's mapping resident in this process
        kb, inside = 0, False
        for line in Path("/proc/self/smaps").read_text().splitlines():
            if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header line, then its fields
                inside = line.endswith(str(tmp_path / "x.ckpt"))
            elif inside and line.startswith("Rss:"):
                kb += int(line.split()[1])
        return kb

    assert sum(float(t.sum()) for t in mapped.values()) != 0  # reads every weight: its pages are in
    assert resident_kb() >= 8 * 1024
    copies = copy_out_of_mapping(mapped)
    assert resident_kb() < 8 * 1024 // 4  # at most two partial pages per tensor and the pickle stay
    assert all(torch.equal(copies[k], mapped[k]) for k in sd)  # read again from the page cache: same values
    assert copies["alias"] is copies["w0"]  # one tensor under two keys stays one
    assert not any(lo <= copies["w3"].data_ptr() < hi for lo, hi, _ in file_mappings())


def refusing_init(name: str):
    """A stand-in for ``torch.nn.init.<name>`` that fails if it would fill a tensor. Like the real
    functions it first offers the call to an active torch-function mode (``empty_weights`` takes
    them all and fills nothing)."""
    def fill(tensor, *args, **kwargs):
        if torch.overrides.has_torch_function_variadic(tensor):
            return torch.overrides.handle_torch_function(fill, (tensor,), tensor, *args, **kwargs)
        raise AssertionError(f"torch.nn.init.{name} filled a tensor while a checkpoint was loading")
    fill.__module__ = "torch.nn.init"
    return fill


def load_mt3(folder: Path):
    from mt3_demo.models.mt3 import adapter

    for f in ("mt3.pth", "config.json"):
        shutil.copy(FIXTURES / "mt3" / "tiny_model" / f, folder / f)
    model = adapter.load_model(adapter.resolve(folder), "cpu", positions="checkpoint")
    reference = safe_torch_load(folder / "mt3.pth")
    return model, folder / "mt3.pth", {k: reference[k] for k in model.state_dict() if k in reference}


def load_mr_mt3(folder: Path):
    from mt3_demo.models.mr_mt3 import checkpoint as ck

    for f in ("model.ckpt", "config.json"):
        shutil.copy(FIXTURES / "mr_mt3" / "set_b" / f, folder / f)
    model = ck.load_model(ck.location_for_file(folder / "model.ckpt")).model
    stored = read_checkpoint(folder / "model.ckpt", mmap=False)["state_dict"]
    return model, folder / "model.ckpt", {k: stored["model." + k] for k in model.state_dict()
                                          if "model." + k in stored}


def load_yourmt3(folder: Path):
    from mt3_demo.models.yourmt3.model import load_model, upstream_key

    shutil.copy(FIXTURES / "yourmt3" / "set_a" / "tiny_model" / "last.ckpt", folder / "last.ckpt")
    model, _ = load_model(folder / "last.ckpt")
    stored = read_checkpoint(folder / "last.ckpt", mmap=False)["state_dict"]
    return model, folder / "last.ckpt", {k: stored[upstream_key(k)] for k in model.state_dict()}


@linux_only
@pytest.mark.parametrize("load", [load_mt3, load_mr_mt3, load_yourmt3], ids=["mt3", "mr_mt3", "yourmt3"])
def test_model_holds_the_checkpoints_tensors_with_no_init_and_nothing_on_meta(load, tmp_path, monkeypatch):
    for name in dir(torch.nn.init):
        if name.endswith("_") and not name.startswith("_"):
            monkeypatch.setattr(torch.nn.init, name, refusing_init(name))
    with pytest.raises(AssertionError, match="filled a tensor"):  # the stand-ins do refuse a random init
        torch.nn.Linear(2, 2)
    model, path, stored = load(tmp_path)
    gc.collect()
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert [k for k, t in tensors.items() if t.is_meta] == []  # parameters, and buffers rebuilt after the load
    assert len(stored) > 10 and all(torch.equal(model.state_dict()[k], v.float()) for k, v in stored.items()
                                    if v.is_floating_point())
    assert {str(t.dtype) for t in tensors.values() if t.is_floating_point()} == {"torch.float32"}
    # Each tensor alone in memory of its own: no window on the (mapped) file or on a bigger tensor
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors.values())
    files = file_mappings()
    assert not any(lo <= t.data_ptr() < hi for t in tensors.values() for lo, hi, _ in files)
    assert not any(p == str(path) for _, _, p in files)  # the file is no longer mapped at all
