"""Static decoding (greedy.static_decode): the CUDA-graph path, checked on the CPU without the graph.

A static step attends over every position of a preallocated cache (the unwritten ones hidden by a
−inf bias) and reads its position from the device. The ids must be the upstream fixtures' ids through
every adapter, and the dynamic decoder's on many rows; the GPU test replays the captured graph.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from mt3_demo.audio import Clip
from mt3_demo.models import greedy, t5
from mt3_demo.models.mr_mt3 import SPEC as MR_MT3
from mt3_demo.models.mt3 import adapter
from mt3_demo.models.yourmt3.adapter import SPEC as YOURMT3
from mt3_demo.options import MRMT3Options, MT3Decode, MT3Options, OptionError, YourMT3Decode, YourMT3Options

FIX = Path(__file__).parent / "fixtures"
TINY = FIX / "mt3" / "tiny_model"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models: one thread is faster than waiting for a second."""


@pytest.fixture
def static_everywhere(monkeypatch):
    """Every greedy decode takes the static path, as it does on CUDA."""
    calls = []
    real = greedy.static_decode

    def spy(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(greedy, "static_by_default", lambda memory: True)
    monkeypatch.setattr(greedy, "static_decode", spy)
    return calls


def clip(path: Path, samples: int | None = None) -> Clip:
    x, sr = sf.read(path, dtype="float32")
    return Clip.from_array(x[:samples], sr)


def test_mt3_fixture_ids(static_everywhere):
    e2e = json.loads((TINY / "e2e_signal_a.json").read_text())
    expected = []
    for seg in e2e["segments"]:
        g = seg["raw_ids"][1:]
        expected.append(g[:g.index(1) + 1])
    t = adapter.SPEC.build(adapter.SPEC.resolve(TINY), CPU, MT3Options(compat="kunato"))
    assert t.transcribe(clip(FIX / "mt3" / "logmel" / "signal_a.wav"), MT3Decode(max_tokens=63)).tokens == expected
    assert static_everywhere == [2]


@pytest.mark.parametrize("folder", [FIX / "mr_mt3", FIX / "mr_mt3" / "set_b"], ids=["set_a", "set_b"])
def test_mr_mt3_fixture_ids(static_everywhere, folder):
    e2e = json.loads((folder / "e2e.json").read_text())
    expected = [s.get("raw_ids", s.get("ids"))[1:] for s in e2e["segments"]]
    t = MR_MT3.build(MR_MT3.resolve(folder), CPU, MRMT3Options())
    assert t.transcribe(clip(folder / "audio.wav")).tokens == expected
    assert static_everywhere == [1, 1, 1]  # one segment after the other (each needs the last one's ids)


def test_yourmt3_fixture_ids(static_everywhere):
    """Segment 0 of set b: 13 channels, upstream's rule that an EOS at step 0 does not finish a row."""
    d = FIX / "yourmt3" / "set_b"
    golden = json.loads((d / "greedy_and_notes.json").read_text())
    t = YOURMT3.build(YOURMT3.resolve(d / "tiny_model"), CPU, YourMT3Options())
    out = t.transcribe(clip(d / "audio.wav", 32767), YourMT3Decode(max_tokens=24, batch_size=1))
    assert len(out.tokens[0]) == 13
    for ch, gch in zip(out.tokens[0], golden["tokens"][0]):
        assert ch == gch[:len(ch)] and all(x == 0 for x in gch[len(ch):]) and len(ch) <= 24
    assert static_everywhere == [13]


@pytest.fixture(scope="module")
def tiny(tiny_mt3):
    return tiny_mt3


@pytest.fixture
def small_first_block(monkeypatch):
    """Static caches start at 16 positions, so a 60-token decode grows them twice (16 → 32 → 60)."""
    grown = []
    real = t5.StaticKVCache.grown

    def spy(cache, positions):
        bigger = real(cache, positions)
        held = sum(t.numel() * t.element_size() for c in (cache, bigger) for kv in c.self_kv for t in kv) + \
            sum(t.numel() * t.element_size() for kv in cache.cross for t in kv)
        grown.append((cache.capacity, positions, held))  # both storages alive: the group's peak
        return bigger

    monkeypatch.setattr(greedy, "STATIC_FIRST", 16)
    monkeypatch.setattr(t5.StaticKVCache, "grown", spy)
    return grown


@pytest.mark.parametrize("eos_id", [1, None])
def test_static_equals_dynamic_in_groups_with_progress(tiny, memory16, eos_id, small_first_block):
    with torch.inference_mode():
        dynamic = greedy.greedy_decode(tiny, memory16, max_tokens=60, eos_id=eos_id)
        per_row = tiny.decoder.init_cache(memory16[:1]).row_bytes(2 * 60)  # growing to 60: old + new storage
        steps, finished = [], []
        budget = 5 * per_row + per_row // 2  # groups of 5, 5, 5, 1
        static = greedy.greedy_decode(tiny, memory16, max_tokens=60, eos_id=eos_id, static=True, cache_budget=budget,
                                  on_step=lambda s, live: steps.append(s), on_finished=finished.append)
    assert static == dynamic
    assert {(a, b) for a, b, _ in small_first_block} == {(16, 32), (32, 60)}
    assert max(held for _, _, held in small_first_block) <= budget
    lengths = [len(g) for g in dynamic]
    if eos_id is not None:
        assert len({n for n in lengths if n < 60}) >= 3 and max(lengths) == 60  # early and full-length rows
    else:
        assert lengths == [60] * 16
    assert finished == sorted(finished) and finished[-1] == 16  # counts over all groups, every row once
    starts = [i for i, s in enumerate(steps) if s == 0]
    assert len(starts) == 4  # groups of 5, 5, 5 and 1 rows
    # each group stops at the first EOS check after its last row's EOS (checks every EOS_CHECK_STEPS)
    check = greedy.EOS_CHECK_STEPS
    for g, (start, end) in enumerate(zip(starts, starts[1:] + [len(steps)])):
        longest = max(lengths[5 * g:5 * g + 5])
        assert end - start == min(60, -(-longest // check) * check)


def test_first_eos_bookkeeping():
    ids = torch.tensor([[1, 5, 1, 1], [5, 5, 5, 5], [5, 1, 5, 1]])
    lengths = [None, None, 2]  # row 2 already finished at its first EOS
    assert greedy._first_eos(ids, lengths, eos_id=1, first_eos_step=1) == 1
    assert lengths == [3, None, 2]  # the EOS at step 0 did not finish row 0 (YourMT3's rule)
    assert greedy._first_eos(ids, [None] * 3, eos_id=1, first_eos_step=0) == 2


def test_cuda_graphs_can_be_switched_off(static_everywhere):
    """Per request (decode options' cuda_graphs=False) or for the process (Settings.cuda_graphs,
    MT3_DEMO_CUDA_GRAPHS=0): the decode then never takes the static path."""
    from mt3_demo.manager import ModelManager
    from mt3_demo.options import Settings, read_env

    memory = torch.zeros(1, 4, 8)
    assert greedy.static_by_default(memory)  # (this test's fixture: every decode would be static)
    t = adapter.SPEC.build(adapter.SPEC.resolve(TINY), CPU, MT3Options(compat="kunato"))
    wav = clip(FIX / "mt3" / "logmel" / "signal_a.wav")
    t.transcribe(wav, MT3Decode(max_tokens=8, cuda_graphs=False))
    assert static_everywhere == []
    t.transcribe(wav, MT3Decode(max_tokens=8))
    assert static_everywhere == [2]
    settings, _ = read_env({"MT3_DEMO_CUDA_GRAPHS": "0"})
    assert settings == Settings(cuda_graphs=False)
    manager = ModelManager(device=CPU, checkpoints={"mt3": TINY}, settings=settings)
    assert manager.decode_for("mt3", MT3Decode(max_tokens=8)) == MT3Decode(max_tokens=8, cuda_graphs=False)
    manager.transcribe("mt3", wav, MT3Decode(max_tokens=8))
    assert static_everywhere == [2]  # no static decode in the manager's run


@pytest.mark.gpu
def test_cuda_graph_replay_gives_the_cpu_ids(tiny, memory16, monkeypatch, small_first_block):
    """On CUDA the default decode captures a graph per cache size and gives the CPU's fp32 ids."""
    captures = []
    real = torch.cuda.CUDAGraph

    class Counting(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            captures.append(self)

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Counting)
    cuda = torch.device("cuda")
    model = adapter.load_model(adapter.resolve(TINY), cuda, positions="checkpoint")
    with torch.inference_mode():
        for eos_id in (1, None):
            cpu_ids = greedy.greedy_decode(tiny, memory16, max_tokens=60, eos_id=eos_id)
            gpu_ids = greedy.greedy_decode(model, memory16.to(cuda), max_tokens=60, eos_id=eos_id)
            assert gpu_ids == cpu_ids
    assert len(captures) == 2 * 3  # two decodes, each at 16, 32 and 60 positions


def test_the_static_cache_start_is_a_decode_option(static_everywhere, monkeypatch):
    """MT3Decode(static_cache_start=N) reaches the static cache (bench_cuda --growth sets it per run
    instead of patching greedy.STATIC_FIRST); the ids stay the fixture's whatever the start."""
    starts = []
    real_init = t5.StaticKVCache.__init__

    def spy(self, cross, capacity, *args, **kwargs):
        starts.append(capacity)
        real_init(self, cross, capacity, *args, **kwargs)

    monkeypatch.setattr(t5.StaticKVCache, "__init__", spy)
    t = adapter.SPEC.build(adapter.SPEC.resolve(TINY), CPU, MT3Options(compat="kunato"))
    wav = clip(FIX / "mt3" / "logmel" / "signal_a.wav")
    default = t.transcribe(wav, MT3Decode(max_tokens=63)).tokens
    assert starts == [min(63, greedy.STATIC_FIRST)]
    starts.clear()
    assert t.transcribe(wav, MT3Decode(max_tokens=63, static_cache_start=8)).tokens == default
    assert starts[0] == 8 and starts[1:] == [16, 32, 63]  # it doubles from there, up to max_tokens
    with pytest.raises(OptionError, match="static_cache_start must be at least 1"):
        MT3Decode(static_cache_start=0)
