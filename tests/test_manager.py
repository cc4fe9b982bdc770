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
from mt3_demo.options import OptionError, Settings


@dataclass(frozen=True)
class FakeOptions:  # load options: a change means a reload
    max_tokens: int | None = None


@dataclass(frozen=True)
class FakeDecode:  # decode options: per request, never a reload
    max_tokens: int | None = None

    def __post_init__(self):
        if self.max_tokens is not None and self.max_tokens < 1:
            raise OptionError(f"max_tokens must be at least 1, not {self.max_tokens}.")


class FakeTranscriber:
    def __init__(self, megabytes: float, device, during=None):
        # A real parameter so the manager measures real weight bytes.
        self.net = torch.nn.Linear(int(megabytes * 2**20 / 4), 1, bias=False)
        self.device, self.dtype = device, torch.float32
        self.during = during  # called while transcribing (the model is handed out then)
        self.decoded_with = []  # the decode options of each run

    def num_segments(self, clip, decode=None):
        return 2

    def transcribe(self, clip, decode=None, progress=None):
        self.decoded_with.append(decode)
        if self.during is not None:
            self.during()
        for i in range(2):
            if progress:
                progress(i + 1, 2)
        return AdapterOutput(notes=[Note(0.0, 0.5, 60)], tokens=[[7, 1]], info={"fake": True})


def fake_spec(model_id: str, megabytes: float = 1.0, calls=None, resolve_error: str | None = None,
              resolve=None, before_build=None, during=None) -> ModelSpec:
    def default_resolve(checkpoint, options, fetch, sources):
        if resolve_error:  # a message, or (reason, fix)
            raise CheckpointError(*resolve_error) if isinstance(resolve_error, tuple) else CheckpointError(resolve_error)
        return Path("/nowhere")

    def build(location, device, options):
        if calls is not None:
            calls.append((model_id, options))
        if before_build is not None:
            before_build()
        return FakeTranscriber(megabytes, device, during)

    return ModelSpec(id=model_id, display_name=model_id.upper(), description="", source="", licence="",
                     instruments="", size_mb=megabytes, options_type=FakeOptions, decode_type=FakeDecode,
                     resolve=resolve or default_resolve, build=build)


def make_manager(specs, budget_mb=100.0, settings: Settings | None = None) -> ModelManager:
    """A manager of fake specs, injected (the registry is not imported)."""
    return ModelManager(device=torch.device("cpu"), budget_mb=budget_mb, specs={s.id: s for s in specs},
                        settings=settings or Settings())


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
    m = make_manager([fake_spec("gone", resolve_error=("gone: x.pth is missing.", "put the file at "
                                                       "$MT3_DEMO_CHECKPOINTS/gone/x.pth"))])
    avail = m.availability("gone")
    # One sentence for the page, the fix apart (behind "details").
    assert avail == Availability("unavailable", "X.pth is missing.", "put the file at $MT3_DEMO_CHECKPOINTS/gone/x.pth")
    assert not avail.usable
    with pytest.raises(CheckpointError, match="MT3_DEMO_CHECKPOINTS"):
        m.transcribe("gone", CLIP)
    with pytest.raises(UnknownModel, match="Unknown model 'nope'"):
        m.transcribe("nope", CLIP)


def test_hub_checkpoint_offline_is_unavailable_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # huggingface_hub's own cache
    hub = HubFile("someone/repo", "dir/model.ckpt", revision="0" * 40, sha256="ab" * 32)
    spec = fake_spec("hubbed", resolve=lambda ckpt, options, fetch, sources: resolve_file(
        "hubbed", "model.ckpt", ckpt, hub, fetch=fetch, sources=sources))
    m = make_manager([spec], settings=Settings(hub_offline=True))
    avail = m.availability("hubbed")
    assert avail.status == "unavailable"
    assert "HF_HUB_OFFLINE" in avail.reason and "$MT3_DEMO_CHECKPOINTS/hubbed/model.ckpt" in avail.fix
    assert avail.reason.count(". ") == 0  # one sentence
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]  # the probe wrote nothing
    # A file placed where the message says makes it ready, without any download.
    (tmp_path / "ck" / "hubbed").mkdir(parents=True)
    (tmp_path / "ck" / "hubbed" / "model.ckpt").write_bytes(b"x")
    m = make_manager([spec], settings=Settings(hub_offline=True, checkpoints_root=tmp_path / "ck"))
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


# ------------------------------------------------------------------------------------------------
# Issue 20: load once, decode per request; specs injected


def test_specs_are_injected_not_overwritten():
    m = make_manager([fake_spec("a"), fake_spec("b")])
    assert m.model_ids() == ["a", "b"] and m.import_errors == {}
    assert m.check("a").status == "ready" and m.check("a").usable
    m.get("a")
    assert m.check("a").status == "loaded" and m.check("a").usable  # asked once, nothing resolved again
    with pytest.raises(UnknownModel, match="Known models: a, b"):
        m.check("c")


def test_decode_options_never_reload():
    calls = []
    m = make_manager([fake_spec("a", calls=calls)])
    m.transcribe("a", CLIP, decode=FakeDecode(max_tokens=8))
    m.transcribe("a", CLIP, decode=FakeDecode(max_tokens=64))
    m.transcribe("a", CLIP, decode={"max_tokens": 16})  # a mapping is checked into FakeDecode
    m.transcribe("a", CLIP)
    assert m.load_count == {"a": 1} and len(calls) == 1
    transcriber, _ = m.get("a")
    assert transcriber.decoded_with == [FakeDecode(8), FakeDecode(64), FakeDecode(16), FakeDecode()]
    m.decode["a"] = FakeDecode(max_tokens=3)  # the host's default for runs that give none
    m.transcribe("a", CLIP)
    assert transcriber.decoded_with[-1] == FakeDecode(3) and m.load_count == {"a": 1}


def test_bad_decode_options_fail_before_loading():
    m = make_manager([fake_spec("a")])
    with pytest.raises(OptionError, match="a options: max_tokens must be at least 1"):
        m.transcribe("a", CLIP, decode={"max_tokens": 0})
    with pytest.raises(OptionError, match="unknown option 'max_token'; known: max_tokens"):
        m.transcribe("a", CLIP, decode={"max_token": 8})
    with pytest.raises(OptionError, match="must be FakeDecode, not FakeOptions"):
        m.transcribe("a", CLIP, decode=FakeOptions(max_tokens=8))
    assert m.load_count == {} and m.loaded_ids() == []
