"""Tiny-model parity with kunato (fixtures/mt3/tiny_model), the shared T5 stack and strict loading."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from numerics import U, assert_greedy_margins, float64_twin, network_tolerance

from mt3_demo.checkpoints import CheckpointError, safe_torch_load
from mt3_demo.models import greedy, t5
from mt3_demo.models.mt3 import adapter

FIX = Path(__file__).parent / "fixtures" / "mt3" / "tiny_model"


@pytest.fixture(scope="module")
def tiny():
    """The tiny checkpoint through the adapter's loading path, in kunato compat (stored inv_freq)."""
    return adapter.load_model(adapter.resolve(FIX), "cpu", positions="checkpoint")


@pytest.fixture(scope="module")
def memory(tiny):
    with torch.inference_mode():
        return tiny.encode(torch.from_numpy(np.load(FIX / "features.npy")))


def expected_greedy():
    """Per row: generated ids after the start token, up to and including EOS."""
    out = []
    for row in np.load(FIX / "greedy_ids.npy").tolist():
        g = row[1:]
        out.append(g[:g.index(1) + 1] if 1 in g else g)
    return out


def test_dims_from_config_and_checkpoint(tiny):
    d = tiny.dims
    assert (d.d_model, d.num_heads, d.d_kv, d.d_ff, d.num_layers, d.num_decoder_layers) == (64, 2, 24, 96, 2, 3)
    assert d.input_dim == 64 and d.vocab_size == 1536


def encoder_products(d: t5.T5Dims) -> int:
    """Longest chain of products through the encoder: the input projection, then per layer
    attention (q/k/v, QKᵀ, ·V, out: 4 sequential) and the gated feed-forward (2)."""
    return 1 + 6 * d.num_layers


def logits_tolerance(model, reference) -> float:
    """Teacher-forced logits from the features: encoder, then per decoder layer self- and
    cross-attention (4 products each) and the feed-forward (2), then the LM head."""
    d = model.dims
    return network_tolerance(reference, encoder_products(d) + 10 * d.num_decoder_layers + 1, max(d.d_model, d.d_ff))


def test_encoder_output(tiny, memory):
    expected = np.load(FIX / "encoder_output.npy")
    d = tiny.dims
    assert float((memory - torch.from_numpy(expected)).abs().max()) <= network_tolerance(
        expected, encoder_products(d), max(d.d_model, d.d_ff, d.input_dim))


def test_teacher_forced_logits(tiny, memory):
    ids = torch.from_numpy(np.load(FIX / "decoder_input_ids.npy"))
    expected = np.load(FIX / "decoder_logits.npy")
    with torch.inference_mode():
        logits = tiny.logits(ids, memory)
    assert float((logits - torch.from_numpy(expected)).abs().max()) <= logits_tolerance(tiny, expected)


def test_greedy_ids_exact(tiny, memory):
    with torch.inference_mode():
        got = greedy.greedy_decode(tiny, memory, max_tokens=63)  # kunato max_length=64 incl. start
    assert got == expected_greedy()
    assert [len(g) for g in got] == [19, 49]


def test_greedy_choices_have_margins_no_cpu_can_flip(tiny, memory):
    """Teacher forcing along the golden ids: no CPU's rounding can change a choice
    (numerics.assert_greedy_margins)."""
    golden = expected_greedy()
    width = max(len(g) for g in golden)
    ids = torch.tensor([[0] + g[:-1] + [0] * (width - len(g)) for g in golden])  # start token 0
    features = torch.from_numpy(np.load(FIX / "features.npy"))
    with torch.inference_mode():
        logits = tiny.logits(ids, memory)
        twin = float64_twin(tiny)
        exact = twin.logits(ids, twin.encode(features.double()))
    assert_greedy_margins(logits, exact, golden, "tiny MT3")


def test_cached_equals_uncached_and_batch_independent(tiny, memory):
    with torch.inference_mode():
        cached = greedy.greedy_decode(tiny, memory, max_tokens=40)
        uncached = greedy.greedy_decode(tiny, memory, max_tokens=40, use_cache=False)
        one_by_one = [greedy.greedy_decode(tiny, memory[i:i + 1], max_tokens=40)[0] for i in range(2)]
    assert cached == uncached == one_by_one
    assert cached[0][-1] == 1 and len(cached[1]) == 40  # one row finished early, one hit the limit


def test_cache_step_logits_equal_full_forward(tiny, memory):
    ids = torch.from_numpy(np.load(FIX / "decoder_input_ids.npy"))
    with torch.inference_mode():
        full = tiny.logits(ids, memory)
        cache = tiny.decoder.init_cache(memory)
        first = tiny.lm_head(tiny.decoder(ids[:, :5], cache=cache))  # a multi-token prefix, then steps
        steps = [tiny.lm_head(tiny.decoder(ids[:, i:i + 1], cache=cache)) for i in range(5, ids.shape[1])]
    # two evaluations of the same decoder (cached vs whole prefix): the decoder's float32 bound
    d = tiny.dims
    tol = network_tolerance(full, 10 * d.num_decoder_layers + 1, max(d.d_model, d.d_ff))
    assert float((torch.cat([first] + steps, dim=1) - full).abs().max()) <= tol
    assert cache.length == ids.shape[1]


def test_magenta_position_table_closed_form():
    d, n = 512, 1024
    pos = t5.SinusoidalPositions(d, max_positions=2048, formula="magenta")
    table = pos(0, n).double()
    p = np.arange(n)[:, None]
    i = np.arange(d // 2)[None, :]
    omega = 10000.0 ** (-i / (d / 2 - 1))
    expected = np.concatenate([np.sin(p * omega), np.cos(p * omega)], axis=1)
    # computed in float64 and rounded once to float32 (values in [−1, 1]): at most u apart
    np.testing.assert_allclose(table.numpy(), expected, atol=U, rtol=0)
    assert math.isclose(omega[0, -1], 1e-4)  # the slowest frequency is exactly 1/10000
    # kunato's stored frequencies give a different table (the port's deviation, docs/models.md#mt3-network)
    kunato = t5.SinusoidalPositions(d, max_positions=2048)
    assert (kunato(0, n) - pos(0, n)).abs().max() > 1.0


def test_checkpoint_table_follows_loaded_inv_freq(tiny):
    sd = safe_torch_load(FIX / "mt3.pth")
    inv = sd["encoder.pos_emb.inv_freq"]
    torch.testing.assert_close(inv, t5.kunato_inv_freq(64))
    expected = torch.cat([torch.outer(torch.arange(10.0), inv).sin(), torch.outer(torch.arange(10.0), inv).cos()], 1)
    torch.testing.assert_close(tiny.encoder.pos_emb(0, 10), expected)
    m = adapter.load_model(adapter.resolve(FIX), "cpu", positions="magenta")
    assert all(p.formula == "magenta" for p in (m.encoder.pos_emb, m.decoder.pos_emb))
    assert not torch.allclose(m.decoder.pos_emb(0, 100), tiny.decoder.pos_emb(0, 100))


def test_second_encoder_stack_and_long_memory(tiny, memory):
    """What MR-MT3 needs: another encoder stack over embeddings, cross-attention memory of any length."""
    dims = tiny.dims
    seg = t5.Encoder(dims, num_layers=1, input_dim=dims.d_model)
    ids = torch.tensor([[1134, 1] + [0] * 30])
    with torch.inference_mode():
        mem = seg(tiny.decoder.embed_tokens(ids))[:, :8]
        long = torch.cat([memory[:1], mem], dim=1)  # [1, 256 + 8, d]
        cached = greedy.greedy_decode(tiny, long, max_tokens=20)
        naive = greedy.greedy_decode(tiny, long, max_tokens=20, use_cache=False)
    assert mem.shape == (1, 8, dims.d_model) and cached == naive


# --- strict loading --------------------------------------------------------------------------


def write_variant(tmp_path, edit):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(FIX / "config.json", folder / "config.json")
    sd = safe_torch_load(FIX / "mt3.pth")
    edit(sd)
    torch.save(sd, folder / "mt3.pth")
    return adapter.resolve(folder)


def test_tiny_checkpoint_has_the_manifest_layout():
    sd = safe_torch_load(FIX / "mt3.pth")
    assert len(sd) == 69
    model = t5.T5(t5.dims_from_state_dict(json.loads((FIX / "config.json").read_text()), sd))
    assert set(t5.expected_keys(model, t5.T5.ALIASES)) == set(sd)


def test_full_size_key_set_matches_manifest():
    manifest = json.loads((Path(__file__).parent / "fixtures" / "mt3" / "mt3_pth_manifest.json").read_text())
    model = t5.T5(t5.T5Dims.from_config(manifest["config_json"], input_dim=512))
    expected = t5.expected_keys(model, t5.T5.ALIASES)
    assert expected == {k["key"]: tuple(k["shape"]) for k in manifest["keys"]}
    assert len(expected) == manifest["num_keys"] == 193


def test_missing_key_rejected(tmp_path):
    loc = write_variant(tmp_path, lambda sd: sd.pop("decoder.block.2.layer.1.EncDecAttention.k.weight"))
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): decoder\.block\.2\.layer\.1\.EncDecAttention\.k\.weight"):
        adapter.load_model(loc)


def test_extra_key_rejected(tmp_path):
    loc = write_variant(tmp_path, lambda sd: sd.__setitem__("encoder.block.2.layer.0.layer_norm.weight", torch.ones(64)))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): encoder\.block\.2\.layer\.0\.layer_norm\.weight"):
        adapter.load_model(loc)


def test_wrong_shape_rejected(tmp_path):
    loc = write_variant(tmp_path, lambda sd: sd.__setitem__("lm_head.weight", torch.zeros(1535, 64)))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*lm_head\.weight: checkpoint \(1535, 64\) vs model \(1536, 64\)"):
        adapter.load_model(loc)


def test_differing_alias_rejected(tmp_path):
    loc = write_variant(tmp_path, lambda sd: sd.__setitem__("proj.weight", sd["proj.weight"] + 1))
    with pytest.raises(CheckpointError, match="proj.weight and encoder.embed_tokens.weight"):
        adapter.load_model(loc)


def test_not_a_checkpoint_rejected(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "mt3.pth").write_bytes(b"not a zip file")
    # (the shared loader currently words this as an allow-list refusal; either way it is refused)
    with pytest.raises(CheckpointError, match="mt3.pth"):
        adapter.load_model(adapter.resolve(folder))


def test_sha256_mismatch_rejected(tmp_path, monkeypatch):
    """The Hub path verifies the published sha256; a file with other bytes is refused."""
    import huggingface_hub

    fake = tmp_path / "hub" / "mt3.pth"
    fake.parent.mkdir()
    shutil.copy(FIX / "mt3.pth", fake)
    calls = []

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename, kw.get("revision")))
        return str(fake)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.delenv("MT3_DEMO_CHECKPOINTS", raising=False)
    with pytest.raises(CheckpointError, match="sha256"):
        adapter.resolve(None)
    assert calls == [("gudgud1014/MR-MT3", "mt3.pth", "main")]
