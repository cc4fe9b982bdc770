"""MR-MT3: frontends, safe checkpoint reading, network parity and contiguous decoding vs upstream.

Golden data: tests/fixtures/mr_mt3/ (set A, "parent") and tests/fixtures/mr_mt3/set_b/, both
produced by running gudgud96/MR-MT3 unchanged (READMEs there). Tolerances from those READMEs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from numerics import (
    assert_greedy_margins, assert_within, float64_twin, mel_log_tolerance, network_tolerance, stft_magnitude64)

from mt3_demo.checkpoints import CheckpointError, lightning_state_dict, read_checkpoint
from mt3_demo.models.mr_mt3 import checkpoint as ck
from mt3_demo.models.mr_mt3 import frontends as fe
from mt3_demo.models.mr_mt3.model import (
    MRMT3, contiguous_decode, dummy_memory_ids, memory_ids_from_generated)

FIX = Path(__file__).parent / "fixtures" / "mr_mt3"
SETS = {"a": FIX, "b": FIX / "set_b"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models decode with many small matmuls: one thread is faster than waiting for a second."""


def npy(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.load(path))


def expected_rows(greedy_ids: np.ndarray) -> list[list[int]]:
    """Upstream rows [start, g1, …, EOS, 0, …] -> generated ids without the start token, up to EOS."""
    out = []
    for row in greedy_ids.tolist():
        g = row[1:]
        out.append(g[: g.index(1) + 1] if 1 in g else g)
    return out


@pytest.fixture(scope="module", params=list(SETS))
def fixture_set(request):
    folder = SETS[request.param]
    loaded = ck.load_model(ck.find_in_folder(folder))
    return request.param, folder, loaded


# ------------------------------------------------------------------------------------------------
# Frontends (docs/models.md#mr-mt3-frontends)


def audio(folder: Path) -> np.ndarray:
    x, sr = sf.read(folder / "audio.wav", dtype="float32")
    assert sr == 16000
    return x


def oracle_logmel(segments: torch.Tensor, n_mels: int, legacy: bool):
    """Float64 oracle of a torchaudio frontend's log-mel and its per-element float32 bound.

    HEAD: frames of 2048 from sample 128·r of the segment padded with 1920 zeros, 7.6 kHz top,
    ln with non-positive mels set to 1e-5. Legacy: centred (reflect-padded) frames, 8 kHz, ln(m + 1e-6).
    """
    x = segments.double()
    if legacy:
        x = torch.nn.functional.pad(x[:, None], (fe.N_FFT // 2, fe.N_FFT // 2), mode="reflect")[:, 0]
    else:
        x = torch.nn.functional.pad(x, (0, fe.N_FFT - 128))
    mag = stft_magnitude64(x.unfold(-1, fe.N_FFT, 128), fe._hann("cpu"))
    mel = fe._mel_matrix(n_mels, 8000.0 if legacy else 7600.0, "cpu")
    return mel_log_tolerance(mag, mel, fe.N_FFT, offset=1e-6 if legacy else 0.0)


def normalised_tolerance(tol: torch.Tensor) -> torch.Tensor:
    """The clip to [−12, 5] is 1-Lipschitz and the scaling divides by 17; zeroed rows are exact."""
    return tol / (fe.MAX_LOG_MEL - fe.MIN_LOG_MEL)


@pytest.mark.parametrize("name", list(SETS))
def test_torchaudio_frontend_matches_upstream_features(name):
    folder = SETS[name]
    want = np.load(folder / "features.npy")
    x = audio(folder)
    got = fe.compute_features(x, "torchaudio", n_mels=want.shape[-1]).numpy()
    assert got.shape == want.shape
    _, tol = oracle_logmel(fe.split_segments(torch.from_numpy(x)), want.shape[-1], legacy=False)
    assert_within(got, want, normalised_tolerance(tol), f"set {name} torchaudio features")


def test_torchaudio_frontend_unnormalised_and_512_bins():
    rows = torch.arange(256).view(1, -1, 1)
    for name, bins, fixture in (("a", 64, "logmel_unnormalised.npy"), ("b", 512, "logmel512.npy")):
        x = torch.from_numpy(audio(SETS[name]))
        segments = fe.split_segments(x)
        valid = torch.tensor(fe.valid_frames(x.numel())).view(-1, 1, 1)
        got = fe.logmel_torchaudio(segments, bins) * (rows < valid)  # 512 bins: empty bands floored
        _, tol = oracle_logmel(segments, bins, legacy=False)
        assert_within(got, np.load(SETS[name] / fixture), tol * (rows < valid), f"set {name} log-mel {bins}")


def test_legacy_frontend_matches_training_era_features():
    want = np.load(SETS["b"] / "features_legacy_frontend.npy")  # [3, 257, 32]
    x = audio(SETS["b"])
    got = fe.compute_features(x, "torchaudio-legacy", n_mels=32).numpy()
    assert got.shape == want.shape == (3, 257, 32)
    _, tol = oracle_logmel(fe.split_segments(torch.from_numpy(x)), 32, legacy=True)
    assert_within(got, want, normalised_tolerance(tol), "legacy features")
    assert not got[:, 256].any()  # the extra centred row is always zeroed


def test_tf_frontend_is_mt3s_with_normalisation():
    x = audio(SETS["b"])
    head = fe.compute_features(x, "torchaudio", n_mels=32)
    tf = fe.compute_features(x, "tf", n_mels=32)
    assert tf.shape == head.shape
    assert 0 <= float(tf.min()) and float(tf.max()) <= 1
    # Same STFT, mel triangles linear in mel vs in Hz: close, not equal (docs/models.md#mt3-frontend: torchaudio's triangles are linear in Hz).
    diff = (tf - head).abs()
    assert 0 < float(diff.mean()) < 1e-3


def test_normalisation_clips_scales_and_zeroes_padding():
    x = torch.tensor([[[-20.0], [-12.0], [5.0], [9.0], [0.0]]])
    out = fe.normalise(x, [4])
    np.testing.assert_allclose(out.flatten().numpy(), [0.0, 0.0, 1.0, 1.0, 0.0])
    assert float(fe.normalise(torch.tensor([[[-3.5]]]), [1])) == pytest.approx(8.5 / 17)


def test_unknown_frontend_is_rejected():
    with pytest.raises(ValueError, match="torchaudio-legacy"):
        fe.compute_features(np.zeros(100, np.float32), "librosa")


# ------------------------------------------------------------------------------------------------
# Network parity, both sets (docs/models.md#mr-mt3-memory-block)


def test_config_read_from_state_dict_and_config_json(fixture_set):
    name, folder, loaded = fixture_set
    cfg = json.loads((folder / "config.json").read_text())
    c = loaded.config
    assert (c.d_model, c.num_heads, c.d_kv, c.d_ff) == (cfg["d_model"], cfg["num_heads"], cfg["d_kv"], cfg["d_ff"])
    assert (c.num_layers, c.num_decoder_layers, c.segmem_num_layers) == (2, 3, 1)
    assert c.segmem_length == cfg["segmem_length"] and loaded.memory_length_source == "config.json"
    assert loaded.model.memory_length == cfg["segmem_length"]


def products(c, part: str) -> int:
    """Longest chain of products (each layer: attention 4 sequential, feed-forward 2; decoder
    layers 10 with cross-attention) through the ``part`` of an MR-MT3 of config ``c``."""
    encoder = 1 + 6 * c.num_layers
    memory = 6 * c.segmem_num_layers
    return {"encoder": encoder, "memory": memory,
            "logits": max(encoder, memory) + 10 * c.num_decoder_layers + 1}[part]


def tolerance(loaded, part: str, reference) -> float:
    c = loaded.config
    return network_tolerance(reference, products(c, part), max(c.d_model, c.d_ff))


def assert_network_close(got, want, bound: float) -> None:
    assert float((got - want).abs().max()) <= bound


@torch.inference_mode()
def test_encoder_and_memory_block(fixture_set):
    name, folder, loaded = fixture_set
    m = loaded.model
    enc, want = m.encode(npy(folder / "features.npy")), npy(folder / "encoder_output.npy")
    assert_network_close(enc, want, tolerance(loaded, "encoder", want))
    ids = npy(folder / "memory_ids.npy")
    mem, want = m.memory_block(ids), npy(folder / "memory_block.npy")
    assert_network_close(mem, want, tolerance(loaded, "memory", want))
    # The shortcut (last block computes only its N kept rows) equals the plain stack.
    plain = m.segmem_encoder(m.decoder.embed_tokens(ids))[:, : m.memory_length]
    assert_network_close(mem, plain, tolerance(loaded, "memory", plain))


@torch.inference_mode()
def test_teacher_forced_logits(fixture_set):
    name, folder, loaded = fixture_set
    feats, mem_ids = npy(folder / "features.npy"), npy(folder / "memory_ids.npy")
    if name == "a":  # segment 0 with the dummy row, segment 1 with a previous-segment-style row
        tokens, want = npy(folder / "decoder_input_ids.npy"), npy(folder / "decoder_logits.npy")
        feats = feats[:2]
    else:  # every segment with the memory row it had in the contiguous run
        tokens, want = npy(folder / "tf_decoder_input_ids.npy"), npy(folder / "tf_logits.npy")
    logits = loaded.model(feats, tokens, mem_ids)
    assert_network_close(logits, want, tolerance(loaded, "logits", want))


@torch.inference_mode()
def test_greedy_choices_have_margins_no_cpu_can_flip(fixture_set):
    """Teacher forcing along the golden ids, each segment with the memory row of the previous
    segment's golden ids: no CPU's rounding can change a choice (numerics.assert_greedy_margins)."""
    name, folder, loaded = fixture_set
    rows = expected_rows(np.load(folder / "greedy_ids.npy"))
    memory_rows = torch.tensor([dummy_memory_ids()] + [memory_ids_from_generated(g) for g in rows[:-1]])
    width = max(len(g) for g in rows)
    tokens = torch.tensor([[0] + g[:-1] + [0] * (width - len(g)) for g in rows])
    features = npy(folder / "features.npy")
    logits = loaded.model(features, tokens, memory_rows)
    exact = float64_twin(loaded.model)(features.double(), tokens, memory_rows)
    assert_greedy_margins(logits, exact, rows, f"set {name}")


@torch.inference_mode()
@pytest.mark.parametrize("use_cache", [True, False], ids=["kv-cache", "naive"])
def test_greedy_ids_with_memory_carried(fixture_set, use_cache):
    name, folder, loaded = fixture_set
    enc = loaded.model.encode(npy(folder / "features.npy"))
    got = contiguous_decode(loaded.model, [enc], use_cache=use_cache)[0]
    assert got == expected_rows(np.load(folder / "greedy_ids.npy"))


@torch.inference_mode()
def test_memory_rows_follow_upstream(fixture_set):
    """Segment 0 sees [1134, 1, 0…]; segment k sees segment k−1's row [0, g…, EOS, 0…]."""
    name, folder, loaded = fixture_set
    rows = expected_rows(np.load(folder / "greedy_ids.npy"))
    built = [dummy_memory_ids()] + [memory_ids_from_generated(g) for g in rows[:-1]]
    if name == "b":
        assert built == np.load(folder / "memory_ids.npy").tolist()
    else:
        mem = loaded.model.memory_block(torch.tensor(built))
        want = npy(folder / "greedy_memory_blocks.npy")
        assert_network_close(mem, want, tolerance(loaded, "memory", want))


def test_memory_row_of_a_length_limited_segment_is_cut():
    row = memory_ids_from_generated(list(range(3, 3 + 1024)))  # no EOS, 1024 ids
    assert len(row) == 1024 and row[0] == 0 and row[-1] == 3 + 1022


@torch.inference_mode()
def test_files_batched_give_the_same_ids_as_alone():
    loaded = ck.load_model(ck.find_in_folder(SETS["a"]))
    enc = loaded.model.encode(npy(SETS["a"] / "features.npy"))
    alone = contiguous_decode(loaded.model, [enc], max_tokens=20)[0]
    other = enc[:2].flip(0)
    both = contiguous_decode(loaded.model, [enc, other], max_tokens=20)
    assert both[0] == alone and both[1] == contiguous_decode(loaded.model, [other], max_tokens=20)[0]


# ------------------------------------------------------------------------------------------------
# The memory is really used


@torch.inference_mode()
def test_second_segment_changes_when_first_segment_context_changes():
    loaded = ck.load_model(ck.find_in_folder(SETS["a"]))
    m = loaded.model
    enc = m.encode(npy(SETS["a"] / "features.npy"))

    def decode(e):  # every path here emits EOS within 8 tokens; the bound only guards regressions
        return contiguous_decode(m, [e], max_tokens=40)[0]

    base = decode(enc[:2])
    # Only segment 0's audio changes (segment 2's encoding put in its place); segment 1 is identical.
    other = decode(torch.stack([enc[2], enc[1]]))
    assert other[0] != base[0]
    assert other[1] != base[1]
    # Control: with N = 0 the memory block is empty and segment 1 no longer depends on segment 0.
    m.memory_length = 0
    try:
        assert decode(enc[:2])[1] == decode(torch.stack([enc[2], enc[1]]))[1]
    finally:
        m.memory_length = loaded.config.segmem_length


@torch.inference_mode()
def test_decoding_without_the_memory_chain_matches_upstream():
    """Set B: each segment alone (dummy memory) = upstream's run without the chain, and it differs
    from the chained run from the first generated token on (segments 1 and 2)."""
    loaded = ck.load_model(ck.find_in_folder(SETS["b"]))
    enc = loaded.model.encode(npy(SETS["b"] / "features.npy"))
    want = expected_rows(np.load(SETS["b"] / "greedy_ids_without_memory_chain.npy"))
    chained = expected_rows(np.load(SETS["b"] / "greedy_ids.npy"))
    for k in (1, 2):
        alone = contiguous_decode(loaded.model, [enc[k:k + 1]], max_tokens=200)[0][0]
        assert alone == want[k]
        assert alone[0] != chained[k][0]


# ------------------------------------------------------------------------------------------------
# Checkpoint reading (docs/models.md#mr-mt3-checkpoints)


def save_lightning(path: Path, state_dict: dict, **extra) -> Path:
    """A Lightning-style file: prefixed state_dict next to trainer state."""
    torch.save({"epoch": 3, "global_step": 7, "pytorch-lightning_version": "2.1.3",
                "state_dict": {f"model.{k}": v for k, v in state_dict.items()},
                "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": [], **extra}, path)
    return path


def stripped(folder: Path) -> dict[str, torch.Tensor]:
    raw = torch.load(folder / "model.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in raw.items()}


def test_real_trainer_checkpoint_reads_with_weights_only_and_drops_optimizer():
    raw = read_checkpoint(SETS["b"] / "model.ckpt")
    assert raw["optimizer_states"][0]["state"]  # AdamW moments are in the file …
    sd = lightning_state_dict(raw, "set b")
    assert len(sd) == 82 and not any(k.startswith("model.") for k in sd)  # … but only weights are kept
    read = lightning_state_dict(read_checkpoint(SETS["b"] / "model.ckpt", mmap=False), "set b")
    assert all(torch.equal(read[k], sd[k]) for k in sd)  # memory-mapped (default) = read


def test_full_size_model_matches_the_manifest_exactly():
    """Strict loading is against the upstream key set: a default-size MRMT3 has exactly the
    manifest's keys and shapes (with the three alias keys)."""
    from mt3_demo.models.t5 import T5Dims, expected_keys

    manifest = json.loads((FIX / "mrmt3_ckpt_manifest.json").read_text())
    c = manifest["config"]
    model = MRMT3(T5Dims(d_model=c["d_model"], num_heads=c["num_heads"], d_kv=c["d_kv"], d_ff=c["d_ff"],
                             num_layers=c["num_layers"], num_decoder_layers=c["num_decoder_layers"],
                             vocab_size=c["vocab_size"], input_dim=c["d_model"]),
                      segmem_num_layers=c["segmem_num_layers"])
    want = {e["key"].removeprefix("model."): tuple(e["shape"]) for e in manifest["keys"]}
    assert expected_keys(model, MRMT3.ALIASES) == want


@torch.inference_mode()
def test_two_memory_layers_load_from_state_dict(tmp_path):
    sd = stripped(SETS["a"])
    g = torch.Generator().manual_seed(0)
    for k in [k for k in sd if k.startswith("segmem_encoder.block.0.")]:
        sd[k.replace(".block.0.", ".block.1.")] = torch.randn(sd[k].shape, generator=g) * 0.2 + (
            1.0 if k.endswith("layer_norm.weight") else 0.0)
    path = save_lightning(tmp_path / "two_layers.ckpt", sd)
    loaded = ck.load_model(ck.Location(path, SETS["a"] / "config.json"))
    m = loaded.model
    assert loaded.config.segmem_num_layers == 2 and len(m.segmem_encoder.block) == 2
    ids = npy(SETS["a"] / "memory_ids.npy")
    mem = m.memory_block(ids)
    assert mem.shape == (2, 16, 64)
    # The second block is used: the result differs from the 1-layer file's, and equals the plain stack.
    assert not torch.allclose(mem, npy(SETS["a"] / "memory_block.npy"), atol=1e-3)
    plain = m.segmem_encoder(m.decoder.embed_tokens(ids))[:, :16]
    assert_network_close(mem, plain, network_tolerance(plain, products(loaded.config, "memory"), 96))


def test_memory_length_priority(tmp_path):
    sd = stripped(SETS["a"])
    f = save_lightning(tmp_path / "exp_segmemV2_prev_context=32.ckpt", sd)
    # No config.json: the registry entry of a known file name.
    loaded = ck.load_model(ck.location_for_file(f))
    assert (loaded.model.memory_length, loaded.memory_length_source) == (32, "registry")
    assert loaded.config.num_heads == ck.DEFAULT_NUM_HEADS  # not in the shapes; published value
    # The user wins over everything.
    loaded = ck.load_model(ck.location_for_file(f), memory_length=8)
    assert (loaded.model.memory_length, loaded.memory_length_source) == (8, "user")
    # An unknown name with the upstream naming: parsed. Anything else: the published default.
    g = save_lightning(tmp_path / "my_prev_context=16_run.ckpt", sd)
    assert ck.settle_memory_length(ck.location_for_file(g), {}, None) == (16, "file name")
    h = save_lightning(tmp_path / "weights.ckpt", sd)
    assert ck.settle_memory_length(ck.location_for_file(h), {}, None) == (64, "default")


def expect_error(tmp_path, sd, *needles):
    path = save_lightning(tmp_path / "bad.ckpt", sd)
    with pytest.raises(CheckpointError) as e:
        ck.load_model(ck.Location(path, SETS["a"] / "config.json"))
    for n in needles:
        assert n in str(e.value), str(e.value)
    return str(e.value)


def test_strict_loading_errors_are_clear(tmp_path):
    base = stripped(SETS["a"])
    sd = dict(base)
    del sd["decoder.block.1.layer.1.EncDecAttention.k.weight"]
    expect_error(tmp_path, sd, "1 missing key(s)", "decoder.block.1.layer.1.EncDecAttention.k.weight")

    sd = dict(base, **{"decoder.extra_head.weight": torch.zeros(3)})
    expect_error(tmp_path, sd, "1 unexpected key(s)", "decoder.extra_head.weight")

    sd = dict(base)
    sd["segmem_encoder.final_layer_norm.weight"] = torch.ones(65)
    expect_error(tmp_path, sd, "shape mismatch", "segmem_encoder.final_layer_norm.weight", "(65,)", "(64,)")

    sd = dict(base)
    sd["segmem_proj.weight"] = sd["segmem_proj.weight"] + 1  # alias pair no longer equal
    expect_error(tmp_path, sd, "segmem_proj.weight", "differ")

    plain_mt3 = {k: v for k, v in base.items() if not k.startswith("segmem")}
    expect_error(tmp_path, plain_mt3, "plain MT3 checkpoint, not MR-MT3")

    path = tmp_path / "not_lightning.ckpt"
    torch.save({"weights": [1, 2, 3]}, path)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        ck.load_model(ck.Location(path))

    path = tmp_path / "truncated.ckpt"
    path.write_bytes((SETS["a"] / "model.ckpt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ck.load_model(ck.Location(path))

    with pytest.raises(CheckpointError, match="plain MT3, no memory"):
        ck.load_model(ck.Location(tmp_path / "mt3.pth"))


class _RemoveTree:
    """Pickles as a call to shutil.rmtree(target) — code that must never run on load."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        import shutil
        return (shutil.rmtree, (str(self.target),))


class _System:
    def __reduce__(self):
        import os
        return (os.system, ("true",))


def test_foreign_pickled_objects_are_never_executed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    sd = stripped(SETS["a"])
    path = save_lightning(tmp_path / "odd.ckpt", sd, hyper_parameters=argparse.Namespace(lr=1e-4),
                          callbacks={"x": _RemoveTree(victim), "dir": Path("/somewhere")})
    # Outside state_dict: replaced by inert stand-ins, never called; the weights load.
    loaded = ck.load_model(ck.Location(path, SETS["a"] / "config.json"))
    assert victim.is_dir()
    assert loaded.model.memory_length == 16
    # A stand-in inside state_dict itself is rejected, not loaded.
    torch.save({"state_dict": {"model.proj.weight": _RemoveTree(victim)}}, tmp_path / "evil_sd.ckpt")
    with pytest.raises(CheckpointError, match="not a mapping of names to tensors"):
        ck.load_model(ck.Location(tmp_path / "evil_sd.ckpt"))
    assert victim.is_dir()
    # Modules torch blocks outright (os, subprocess, …) stay a clear error.
    save_lightning(tmp_path / "system.ckpt", sd, callbacks={"x": _System()})
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        ck.load_model(ck.Location(tmp_path / "system.ckpt", SETS["a"] / "config.json"))
