"""Model manager: lazy, loads once under concurrency, LRU unload under a budget, honest availability."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from mt3_demo.audio import Clip
from mt3_demo.checkpoints import CheckpointError, HubFile, resolve_file
from mt3_demo.manager import Availability, ModelManager, UnknownModel
from mt3_demo.models.base import AdapterOutput, ModelSpec
from mt3_demo.notes import Note


@dataclass(frozen=True)
class FakeOptions:
    max_tokens: int | None = None


class FakeTranscriber:
    def __init__(self, megabytes: float, device, during=None):
        # A real parameter so the manager measures real weight bytes.
        self.net = torch.nn.Linear(int(megabytes * 2**20 / 4), 1, bias=False)
        self.device, self.dtype = device, torch.float32
        self.during = during  # called while transcribing (the model is handed out then)

    def num_segments(self, clip):
        return 2

    def transcribe(self, clip, progress=None):
        if self.during is not None:
            self.during()
        for i in range(2):
            if progress:
                progress(i + 1, 2)
        return AdapterOutput(notes=[Note(0.0, 0.5, 60)], tokens=[[7, 1]], info={"fake": True})


def fake_spec(model_id: str, megabytes: float = 1.0, calls=None, resolve_error: str | None = None,
              resolve=None, before_build=None, during=None) -> ModelSpec:
    def default_resolve(checkpoint, options, fetch):
        if resolve_error:
            raise CheckpointError(resolve_error)
        return Path("/nowhere")

    def build(location, device, options):
        if calls is not None:
            calls.append((model_id, options))
        if before_build is not None:
            before_build()
        return FakeTranscriber(megabytes, device, during)

    return ModelSpec(id=model_id, display_name=model_id.upper(), description="", source="", licence="",
                     instruments="", size_mb=megabytes, options_type=FakeOptions,
                     resolve=resolve or default_resolve, build=build)


def make_manager(specs, budget_mb=100.0) -> ModelManager:
    m = ModelManager(device=torch.device("cpu"), budget_mb=budget_mb)
    m.specs = {s.id: s for s in specs}
    return m


CLIP = Clip.from_array(np.zeros(16000, np.float32))


def test_registry_has_the_embedded_default_and_all_mt3_family_ids():
    m = ModelManager(device=torch.device("cpu"))
    assert "transkun" in m.model_ids()
    assert m.availability("transkun").status == "ready"
    assert m.loaded_ids() == []  # lazy: building the manager loads nothing


def test_lazy_load_once_and_warm():
    calls = []
    m = make_manager([fake_spec("a", calls=calls)])
    assert m.loaded_ids() == [] and calls == []
    first = m.transcribe("a", CLIP)
    second = m.transcribe("a", CLIP)
    assert len(calls) == 1
    assert first.load_seconds > 0 and second.load_seconds == 0.0
    assert second.inference_seconds > 0 and second.rtf == pytest.approx(second.inference_seconds / 1.0)
    assert first.tokens == [[7, 1]] and first.info == {"fake": True} and first.device == "cpu"


def test_concurrent_requests_share_one_load():
    """Six requests arrive together; the one build does not finish before all six have asked."""
    calls, n = [], 6
    asked = threading.Semaphore(0)
    start = threading.Barrier(n)

    def hold_build_until_everyone_asked():
        for _ in range(n):
            assert asked.acquire(timeout=30)

    m = make_manager([fake_spec("a", calls=calls, before_build=hold_build_until_everyone_asked)])
    results, errors = [], []

    def worker():
        try:
            start.wait(timeout=30)
            asked.release()
            results.append(m.get("a")[0])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and len(results) == n
    assert all(r is results[0] for r in results)


def test_lru_unload_when_budget_exceeded():
    m = make_manager([fake_spec("a", 4), fake_spec("b", 4), fake_spec("c", 4)], budget_mb=9)
    m.get("a")
    m.get("b")
    m.get("a")  # a is now the most recently used
    m.get("c")  # needs room: b (least recently used) goes
    assert m.loaded_ids() == ["a", "c"]
    assert m.load_count == {"a": 1, "b": 1, "c": 1}
    m.get("b")
    assert m.loaded_ids() == ["c", "b"] and m.load_count["b"] == 2


def test_options_change_rebuilds():
    calls = []
    m = make_manager([fake_spec("a", calls=calls)])
    m.get("a")
    m.options["a"] = FakeOptions(max_tokens=8)
    m.get("a")
    assert [c[1] for c in calls] == [FakeOptions(), FakeOptions(max_tokens=8)]


def test_unavailable_model_reports_reason_and_fix():
    m = make_manager([fake_spec("gone", resolve_error="gone: x.pth is missing. To fix: put the file at "
                                                      "$MT3_DEMO_CHECKPOINTS/gone/x.pth")])
    avail = m.availability("gone")
    # One sentence for the page, the fix apart (behind "details").
    assert avail == Availability("unavailable", "X.pth is missing.", "put the file at $MT3_DEMO_CHECKPOINTS/gone/x.pth")
    assert not avail.usable
    with pytest.raises(CheckpointError, match="MT3_DEMO_CHECKPOINTS"):
        m.transcribe("gone", CLIP)
    with pytest.raises(UnknownModel, match="Unknown model 'nope'"):
        m.transcribe("nope", CLIP)


def test_hub_checkpoint_offline_is_unavailable_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("MT3_DEMO_CHECKPOINTS", raising=False)
    hub = HubFile("someone/repo", "dir/model.ckpt", revision="0" * 40, sha256="ab" * 32)
    spec = fake_spec("hubbed", resolve=lambda ckpt, options, fetch: resolve_file("hubbed", "model.ckpt", ckpt,
                                                                                   hub, fetch=fetch))
    m = make_manager([spec])
    avail = m.availability("hubbed")
    assert avail.status == "unavailable"
    assert "HF_HUB_OFFLINE" in avail.reason and "$MT3_DEMO_CHECKPOINTS/hubbed/model.ckpt" in avail.fix
    assert avail.reason.count(". ") == 0  # one sentence
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]  # the probe wrote nothing
    # A file placed where the message says makes it ready, without any download.
    (tmp_path / "ck" / "hubbed").mkdir(parents=True)
    (tmp_path / "ck" / "hubbed" / "model.ckpt").write_bytes(b"x")
    monkeypatch.setenv("MT3_DEMO_CHECKPOINTS", str(tmp_path / "ck"))
    assert m.availability("hubbed").status == "ready"


def test_default_selection_falls_back_to_embedded():
    m = make_manager([fake_spec("transkun"), fake_spec("mt3", resolve_error="missing")])
    assert m.default_selection() == ["transkun"]
    m2 = make_manager([fake_spec("transkun"), fake_spec("mt3")])
    assert m2.default_selection() == ["mt3", "transkun"]


def test_preload_loads_usable_models_only():
    m = make_manager([fake_spec("a"), fake_spec("b", resolve_error="missing")])
    assert m.preload() == {}
    assert m.loaded_ids() == ["a"]


def test_busy_model_is_never_unloaded_and_never_loaded_twice():
    loaded_while_a_runs = []

    def load_b_meanwhile():  # runs while "a" is transcribing
        m.get("b")  # needs room: "a" is the only candidate, but it is busy
        loaded_while_a_runs.extend(m.loaded_ids())

    m = make_manager([fake_spec("a", 4, during=load_b_meanwhile), fake_spec("b", 4)], budget_mb=6)
    m.transcribe("a", CLIP)
    assert "a" in loaded_while_a_runs and m.load_count["a"] == 1
    m.transcribe("a", CLIP)
    assert m.load_count["a"] == 1


def test_a_failure_after_transcribing_is_an_error_not_half_a_result(tmp_path, monkeypatch):
    from mt3_demo import pipeline

    def broken_png(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("mt3_demo.pianoroll.save_png", broken_png)
    m = make_manager([fake_spec("a")])
    result = pipeline.transcribe_one(CLIP, "a", m, tmp_path, listening=())
    assert not result.ok and result.transcription is None
    assert "disk full" in result.error
