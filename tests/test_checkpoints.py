"""Checkpoint resolution, sha256 verification and the safe loader."""
from __future__ import annotations

import argparse

import pytest
import torch

from mt3_demo.checkpoints import (CheckpointError, HubFile, check_state_dict, load_strict, resolve_file,
                                  safe_torch_load, sha256_file, verify_sha256)


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


def test_env_folder(tmp_path, monkeypatch):
    (tmp_path / "mt3").mkdir()
    (tmp_path / "mt3" / "mt3.pth").write_bytes(b"abc")
    monkeypatch.setenv("MT3_DEMO_CHECKPOINTS", str(tmp_path))
    assert resolve_file("mt3", "mt3.pth") == tmp_path / "mt3" / "mt3.pth"


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
