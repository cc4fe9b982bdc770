"""The fast paths give the same results as the plain ones: batching, finished-row handling, the
grouped mixture-of-experts, the pre-encoder's in-place ops, the chunk policy and the thread policy.

Equalities here are exact (torch.equal / identical ids) where a fast path does the same float
operations on the same operands as its reference, only fewer passes or fewer copies; the pre-encoder
block (BatchNorm folded, channels-last) reorders float operations and is held to a rounding bound.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.naive import moe_loop
from mt3_demo import threads
from mt3_demo.models import greedy, t5
from mt3_demo.models.mt3 import adapter, decoding, features
from mt3_demo.models.yourmt3.encoder import MoE, ResBlock, mean_of_bin_pairs
from numerics import float64_twin, network_tolerance

TINY = Path(__file__).parent / "fixtures" / "mt3" / "tiny_model"


@pytest.fixture(scope="module")
def tiny(tiny_mt3):
    return tiny_mt3


def test_all_rows_at_once_equal_row_by_row(tiny, memory16):
    with torch.inference_mode():
        together = greedy.greedy_decode(tiny, memory16, max_tokens=60)
        alone = [greedy.greedy_decode(tiny, memory16[i:i + 1], max_tokens=60)[0] for i in range(16)]
        in_fives = sum((greedy.greedy_decode(tiny, memory16[i:i + 5], max_tokens=60) for i in range(0, 16, 5)), [])
    assert together == alone == in_fives
    lengths = sorted(len(g) for g in together)
    # the finished-row path is exercised: several rows end early, at different steps, some run to the limit
    assert len({n for n in lengths if n < 60}) >= 3 and lengths[-1] == 60


def test_finished_rows_are_dropped_in_batches(tiny, memory16):
    """Rows leave the batch once finished rows reach an eighth of it, never one copy per finished row."""
    live, batch = [], []
    split = t5.KVCache.split

    def spy(cache, keep, move):
        assert move is None  # no budget: nothing is set aside
        batch.append(int(keep.numel()))
        return split(cache, keep, move)

    t5.KVCache.split = spy
    try:
        with torch.inference_mode():
            ids = greedy.greedy_decode(tiny, memory16, max_tokens=60, on_step=lambda s, n: live.append(n))
    finally:
        t5.KVCache.split = split
    finished = sum(1 for g in ids if g[-1] == 1)
    assert 0 < len(batch) < finished  # fewer compactions than finished rows
    assert live[0] == 16 and live[-1] == sum(1 for g in ids if len(g) == len(live))


def test_generate_ids_same_whatever_the_chunking(tiny):
    frontend = features.LogMel(tiny.dims.input_dim, "zero", torch.device("cpu"))
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(5 * features.SEGMENT_SAMPLES)).astype(np.float32)
    auto_t, one_t = decoding.Timings(), decoding.Timings()
    auto = decoding.generate_ids(tiny, frontend, x, max_tokens=30, timings=auto_t)
    one = decoding.generate_ids(tiny, frontend, x, max_tokens=30, batch_size=1, timings=one_t)
    assert auto == one and len(auto) == features.num_segments(len(x))
    assert auto_t.chunks == [len(auto)] and one_t.chunks == [1] * len(auto)


def test_chunk_policy_fits_the_budget_and_evens_chunks():
    dims = t5.T5Dims()  # MT3's full size
    cpu = torch.device("cpu")
    per = decoding.bytes_per_segment(dims, decoding.EXPECTED_TOKENS, 1024)
    # cross keys/values (256 frames) + self cache (256 positions), 8 layers, k and v, 6·64 wide, float32
    assert per > 8 * 2 * 384 * (256 + 256) * 4
    # a minute (30 segments) at the default max_tokens: one batch, rows longer than expected set aside
    assert decoding.default_batch_size(dims, 1024, cpu, 30) == 30
    cap = decoding.default_batch_size(dims, 1024, cpu, 1000)
    assert cap * per <= decoding.DECODE_BUDGET_MB["cpu"] * 2**20
    assert decoding.default_batch_size(dims, 1024, cpu, 30, budget_mb=16 * per / 2**20) == 15  # 15 + 15
    assert decoding.default_batch_size(dims, 1024, cpu, 5, budget_mb=1) == 1


def test_cache_storage_doubles_from_16_to_128_then_grows_by_128():
    sizes = [t5.KVCache.storage(n) for n in (1, 16, 17, 33, 65, 128, 129, 256, 257, 1023)]
    assert sizes == [16, 16, 32, 64, 128, 128, 256, 256, 384, 1024]


class CacheWatch:
    """Every KVCache alive, and the most bytes they held together at any step."""

    def __init__(self, monkeypatch):
        import weakref
        self.caches, self.peak = weakref.WeakSet(), 0
        init = t5.KVCache.__init__

        def tracked(cache, cross):
            init(cache, cross)
            self.caches.add(cache)

        monkeypatch.setattr(t5.KVCache, "__init__", tracked)

    def step(self, _step: int, _rows: int) -> None:
        held = sum(k.nbytes + v.nbytes for c in list(self.caches) for k, v in c.cross + c.self_kv)
        self.peak = max(self.peak, held)


@pytest.mark.parametrize("eos", [1, None])
def test_cache_budget_sets_rows_aside_same_ids_within_bound(tiny, memory16, monkeypatch, eos):
    """Rows outgrowing the budget wait and resume later: same ids, and the caches of all rows
    together never exceed the budget plus one row at max_tokens."""
    monkeypatch.setattr(t5.KVCache, "GROW", 8)  # many growth points within 60 tokens
    with torch.inference_mode():
        plain = greedy.greedy_decode(tiny, memory16, max_tokens=60, eos_id=eos)
        row = tiny.decoder.init_cache(memory16[:1]).row_bytes
        budget = 16 * row(16)  # all 16 rows fit 16 positions, not 24
        splits = []
        split = t5.KVCache.split

        def spy(cache, keep, move):
            if move is not None:
                splits.append((int(keep.numel()), int(move.numel())))
            return split(cache, keep, move)

        monkeypatch.setattr(t5.KVCache, "split", spy)
        watch = CacheWatch(monkeypatch)
        budgeted = greedy.greedy_decode(tiny, memory16, max_tokens=60, eos_id=eos, cache_budget=budget,
                                    on_step=watch.step)
    assert budgeted == plain
    assert splits and all(keep >= 1 for keep, _ in splits)
    assert watch.peak <= budget + row(64)  # 60 tokens fill 64 positions in blocks of 8
    assert watch.peak > budget // 2  # the watch saw the caches (a bound that held vacuously would not)


def test_generate_ids_reports_progress_within_a_chunk_and_stops(tiny):
    frontend = features.LogMel(tiny.dims.input_dim, "zero", torch.device("cpu"))
    x = (0.1 * np.random.default_rng(1).standard_normal(3 * features.SEGMENT_SAMPLES)).astype(np.float32)
    seen = []
    ids = decoding.generate_ids(tiny, frontend, x, max_tokens=2 * decoding.PROGRESS_STEPS + 5,
                                stop_at_eos=False, progress=lambda done, total: seen.append((done, total)))
    total = len(ids)
    assert seen[-1] == (total, total) and len(seen) >= 3  # 2 reports while decoding, 1 at the end
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))

    class Stop(Exception):
        pass

    calls = []

    def stop(done, total):
        calls.append((done, total))
        raise Stop

    with pytest.raises(Stop):
        decoding.generate_ids(tiny, frontend, x, max_tokens=10 * decoding.PROGRESS_STEPS, stop_at_eos=False,
                              progress=stop)
    assert calls == [(0, total)]  # stopped at the first report, PROGRESS_STEPS into the only chunk


@pytest.mark.parametrize("tokens", [1, 37, 2000])
def test_grouped_moe_equals_the_per_expert_loop(tokens):
    torch.manual_seed(tokens)
    layer = MoE(128, 512, num_experts=8, top_k=2).eval()
    x = torch.randn(tokens, 128)
    with torch.inference_mode():
        assert torch.equal(layer(x), moe_loop(layer, x))
        x3 = torch.randn(3, 5, 128)  # any leading shape
        assert torch.equal(layer(x3), moe_loop(layer, x3))


def test_moe_with_an_expert_left_without_tokens():
    torch.manual_seed(1)
    layer = MoE(16, 32, num_experts=4, top_k=2).eval()
    with torch.no_grad():
        layer.gate.weight[3] = -100.0  # expert 3 never in the top 2 of positive inputs
    x = torch.rand(50, 16) + 0.1
    with torch.inference_mode():
        _, idx = layer.route(x)
        assert not bool((idx == 3).any())
        assert torch.equal(layer(x), moe_loop(layer, x))


def test_pre_encoder_block_equals_the_plain_formula_up_to_rounding():
    """BatchNorms folded into the convs, channels-last, the 1-channel conv as an im2col GEMM: exact
    algebra, so only float32 rounding differs from the plain formula (evaluated in float64 here)."""
    torch.manual_seed(0)
    for c_in in (1, 8):
        block = ResBlock(c_in, 8).eval()
        for bn in (block.bn1, block.bn2):
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
        x = torch.randn(2, c_in, 5, 32)
        b64, x64 = float64_twin(block), x.double()
        with torch.inference_mode():
            h = F.relu(b64.bn1(b64.conv1(x64)))
            h = b64.bn2(b64.conv2(h))
            want = F.avg_pool2d(F.relu(h + (b64.shortcut(x64) if b64.shortcut is not None else x64)), (1, 2))
            got = block(x)
        assert got.is_contiguous(memory_format=torch.channels_last)
        # two convs of fan-in ≤ 9·8, each weight also rounded once when its BN scale is folded in
        assert float((got.double() - want).abs().max()) <= network_tolerance(want, 4, 9 * 8)
    with pytest.raises(RuntimeError, match="inference only"):
        ResBlock(1, 8).train()(torch.randn(1, 1, 3, 4))
    odd = torch.randn(1, 2, 3, 7)
    assert torch.equal(mean_of_bin_pairs(odd.clone()), F.avg_pool2d(odd, (1, 2)))
    wide = torch.randn(1, 4, 3, 8).contiguous(memory_format=torch.channels_last)
    assert torch.equal(mean_of_bin_pairs(wide.clone()), F.avg_pool2d(wide, (1, 2)))


def test_thread_override_and_bad_values():
    from mt3_demo.options import OptionError, read_env

    assert threads.choose_threads(3) == (3, f"{threads.ENV}=3")
    for bad in (0, -2, "two", 65):  # issue 21.4: 512 threads turned 0.08 s into 20 s
        with pytest.raises(OptionError, match="threads"):
            threads.choose_threads(bad)
    for bad in ("0", "-2", "two", "512", "1e11"):  # from the environment: refused once, the policy applies
        settings, problems = read_env({threads.ENV: bad})
        assert settings.threads is None and len(problems) == 1 and problems[0].startswith(threads.ENV + "=")
    n, why = threads.choose_threads(None)
    assert 1 <= n <= len(threads.allowed_cores()) and "cores allowed" in why
    before = torch.get_num_threads()
    with threads.thread_policy(1) as used:
        assert used == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with threads.thread_policy(None) as used:
        assert used >= 1
    assert torch.get_num_threads() == before


def test_cgroup_quota_and_proc_stat_parsing(tmp_path):
    assert threads.cgroup_quota(tmp_path) is None  # no file
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_quota(tmp_path) == 1.5
    stat = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1 2\n"
    assert threads._cpu_ticks(stat) == {0: (10, 50), 1: (10, 50)}


@pytest.mark.gpu
def test_cuda_fp32_batched_decoding_matches_the_cpu_ids(tiny, memory16):
    """The same batched, cached decode on CUDA in fp32 gives the CPU's ids (tiny fixture model)."""
    cuda = torch.device("cuda")
    model = adapter.load_model(adapter.resolve(TINY), cuda, positions="checkpoint")
    with torch.inference_mode():
        cpu_ids = greedy.greedy_decode(tiny, memory16, max_tokens=60)
        gpu_ids = greedy.greedy_decode(model, memory16.to(cuda), max_tokens=60)
        torch.manual_seed(0)
        layer = MoE(128, 512, num_experts=8, top_k=2).eval()
        x = torch.randn(500, 128)
        moe_gpu = layer.to(cuda)(x.to(cuda)).cpu()
        moe_ref = moe_loop(layer, x.to(cuda)).cpu()
    assert gpu_ids == cpu_ids
    assert torch.equal(moe_gpu, moe_ref)
