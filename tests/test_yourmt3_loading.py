"""YourMT3+ checkpoint loading: safe unpickling, config from the checkpoint, strict keys, clear errors."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from mt3_demo.checkpoints import CheckpointError
from mt3_demo.models.t5 import RMSNorm
from mt3_demo.checkpoints import InertObject
from mt3_demo.models.yourmt3.checkpoint import read_checkpoint
from mt3_demo.models.yourmt3.model import YourMT3, YourMT3Dims, expected_upstream_shapes, load_model

FIX = Path(__file__).parent / "fixtures" / "yourmt3"
CKPT_B = FIX / "set_b" / "tiny_model" / "last.ckpt"


@pytest.fixture(scope="module")
def ckpt_b():
    sd, hp = read_checkpoint(CKPT_B)
    return sd, hp


def save(tmp_path, sd, hp, name="last.ckpt") -> Path:
    """A checkpoint with a plain-dict hyper_parameters (model_cfg, audio_cfg only)."""
    path = tmp_path / name
    plain = {k: copy.deepcopy(hp[k]) for k in ("model_cfg", "audio_cfg") if k in hp}
    torch.save({"state_dict": dict(sd), "hyper_parameters": plain}, path)
    return path


def ptf(hp):
    return hp["model_cfg"]["encoder"]["perceiver-tf"]


def test_reads_upstream_objects_without_running_them(ckpt_b):
    sd, hp = ckpt_b
    assert "utils" not in sys.modules or not hasattr(sys.modules["utils"], "task_manager")
    assert isinstance(hp["task_manager"], InertObject)
    assert hp["task_manager"]._global == "utils.task_manager.TaskManager"
    assert hp["model_cfg"]["decoder"]["multi-t5"]["d_kv"] == 16
    assert len(sd) == 330
    with pytest.raises(Exception):  # why a restricted unpickler is needed at all
        torch.load(CKPT_B, map_location="cpu", weights_only=True)


def test_config_comes_from_the_checkpoint():
    for name, (d_latent, d_model, heads, d_kv, local) in {"set_a": (64, 48, 2, 64, 1),
                                                          "set_b": (48, 64, 3, 16, 2)}.items():
        model, _ = load_model(FIX / name / "tiny_model" / "last.ckpt")
        e, d = model.dims.encoder, model.dims.decoder
        assert (e.d_latent, d.d_model, d.num_heads, d.d_kv, e.num_local) == (d_latent, d_model, heads, d_kv, local)
        assert (e.conv_channels, e.num_heads, e.norm, model.dims.rotary_freqs) == (8, 8, "layer_norm", 2)


def test_full_size_model_matches_the_manifest():
    manifest = json.loads((FIX / "ymt3_ckpt_manifest.json").read_text())
    with torch.device("meta"):
        model = YourMT3(YourMT3Dims())
    ours = expected_upstream_shapes(model)
    theirs = {k["key"]: tuple(k["shape"]) for k in manifest["keys"]}
    assert ours == theirs
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == manifest["num_parameters"] == 47_078_022  # shared rotary tensors counted once


def test_missing_layernorm_biases_with_layer_norm_config_fails_loudly(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    sd = {k: v for k, v in sd.items() if not (".layernorm" in k and k.endswith(".bias"))}
    with pytest.raises(CheckpointError, match="layer_norm_type='layer_norm'.*lacks.*layernorm1.bias"):
        load_model(save(tmp_path, sd, hp))


def test_rms_norm_checkpoint_builds_rms_norms(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    sd = {k: v for k, v in sd.items() if not (".layernorm" in k and k.endswith(".bias"))}
    hp = copy.deepcopy({k: hp[k] for k in ("model_cfg", "audio_cfg")})
    ptf(hp)["layer_norm_type"] = "rms_norm"
    model, _ = load_model(save(tmp_path, sd, hp))
    assert model.dims.encoder.norm == "rms_norm"
    assert isinstance(model.encoder.blocks[0].spectral_cross_attention.layernorm1, RMSNorm)


def test_biases_present_but_config_says_rms_fails(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    hp = copy.deepcopy({k: hp[k] for k in ("model_cfg", "audio_cfg")})
    ptf(hp)["layer_norm_type"] = "rms_norm"
    with pytest.raises(CheckpointError, match="rms_norm.*has the LayerNorm bias"):
        load_model(save(tmp_path, sd, hp))


def test_bare_state_dict_uses_shapes_and_upstream_defaults(tmp_path, ckpt_b):
    """Without hyper_parameters: sizes from shapes, norm from the keys, d_kv = 64 (upstream default)."""
    sd_a, _ = read_checkpoint(FIX / "set_a" / "tiny_model" / "last.ckpt")
    torch.save(dict(sd_a), tmp_path / "a.pt")
    model, _ = load_model(tmp_path / "a.pt")
    assert (model.dims.decoder.num_heads, model.dims.decoder.d_kv, model.dims.encoder.norm) == (2, 64, "layer_norm")
    # set B's decoder is 3 × 16 wide: the default d_kv cannot explain it, and we say so
    torch.save(dict(ckpt_b[0]), tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="attention width 48 does not fit 0 heads × d_kv 64 taken from upstream's defaults"):
        load_model(tmp_path / "b.pt")


def test_partial_missing_key_is_named(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    drop = "encoder.blocks.1.temporal_transformer.0.layernorm.bias"
    sd = {k: v for k, v in sd.items() if k != drop}
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): " + drop.replace(".", r"\.")):
        load_model(save(tmp_path, sd, hp))


def test_unexpected_and_misshaped_keys_are_named(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    sd = dict(sd)
    sd["encoder.extra.weight"] = torch.zeros(3)
    sd["pre_decoder.0.linear.weight"] = torch.zeros(64, 95)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): encoder\.extra\.weight.*shape mismatch.*"
                                              r"pre_decoder\.0\.linear\.weight: checkpoint \(64, 95\)"):
        load_model(save(tmp_path, sd, hp))


def test_pitchshift_keys_are_dropped_like_the_space(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    sd = dict(sd, **{"pitchshift.layer.weight": torch.zeros(2)})
    model, _ = load_model(save(tmp_path, sd, hp))
    assert model.dims.decoder.d_kv == 16


def test_rotary_aliases_must_agree(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    sd = dict(sd)
    key = "encoder.blocks.1.local_transformer.0.attention.self.rotary_emb.freqs"
    sd[key] = sd[key] * 2
    with pytest.raises(CheckpointError, match="should equal encoder.rotary_emb_latent.freqs"):
        load_model(save(tmp_path, sd, hp))


def test_wrong_rotary_flag_or_variant_is_refused(tmp_path, ckpt_b):
    sd, hp = ckpt_b
    hp2 = copy.deepcopy({k: hp[k] for k in ("model_cfg", "audio_cfg")})
    ptf(hp2)["rope_partial_pe"] = False
    with pytest.raises(CheckpointError, match="rope_partial_pe=False implies 4 rotary frequencies"):
        load_model(save(tmp_path, sd, hp2))
    hp3 = copy.deepcopy({k: hp[k] for k in ("model_cfg", "audio_cfg")})
    ptf(hp3)["ff_layer_type"] = "mlp"
    with pytest.raises(CheckpointError, match="ff_layer_type='mlp'"):
        load_model(save(tmp_path, sd, hp3))


def test_corrupt_or_missing_file(tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(CKPT_B.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="could not be read"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.ckpt")
