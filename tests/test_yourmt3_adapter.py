"""YourMT3+ adapter: registry entry, resolution, build options, transcription, CLI output."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from mt3_demo.audio import Clip
from mt3_demo.checkpoints import CheckpointError
from mt3_demo.models.base import Transcriber, ieee_float32_convolutions
from mt3_demo.models.yourmt3.adapter import CHECKPOINTS, SPEC, choose_dtype
from mt3_demo.options import YourMT3Decode, YourMT3Options

D24 = YourMT3Decode(max_tokens=24)  # the fixtures' token limit per channel

FIX = Path(__file__).parent / "fixtures" / "yourmt3"


def test_spec():
    assert SPEC.id == "yourmt3" and SPEC.display_name == "YourMT3+ (YPTF.MoE+Multi)"
    hub = CHECKPOINTS["YPTF.MoE+Multi (noPS)"].hub
    assert hub.repo_type == "space" and hub.repo_id == "mimbres/YourMT3"
    assert hub.filename.endswith("mc13_256_g4_all_v7_mt3f_sqr_rms_moe_wf4_n8k2_silu_rope_rp_b36_nops/checkpoints/last.ckpt")
    assert hub.sha256 == "ae38e415c79efd5592dcb9b658cdb99ddb11d4c4e1eaa364cab04a052473fc25"


def test_resolve(tmp_path):
    folder = FIX / "set_a" / "tiny_model"
    assert SPEC.resolve(folder) == folder / "last.ckpt"
    assert SPEC.resolve(folder / "last.ckpt") == folder / "last.ckpt"
    with pytest.raises(CheckpointError, match="does not exist"):
        SPEC.resolve(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no last.ckpt"):
        SPEC.resolve(tmp_path)
    from mt3_demo.models.yourmt3.adapter import resolve

    with pytest.raises(CheckpointError, match="does not implement"):
        resolve(folder, YourMT3Options(checkpoint_name="YMT3+"))
    with pytest.raises(CheckpointError, match="unknown checkpoint name"):
        resolve(folder, YourMT3Options(checkpoint_name="nope"))


def test_fp32_convolutions_are_ieee():
    """cuDNN runs float32 convolutions in TF32 unless told not to; fp32 must mean float32."""
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    try:
        conv.fp32_precision = "tf32"  # PyTorch's default
        ieee_float32_convolutions()
        assert conv.fp32_precision == "ieee"
    finally:
        conv.fp32_precision = before


@pytest.mark.gpu
def test_cuda_fp32_gives_the_cpu_ids():
    """Set b's two segments on CUDA in fp32 (CUDA graphs, IEEE convolutions): the CPU's ids on
    every channel. With cuDNN's TF32 convolutions 6 of the 26 rows differed on an H200."""
    d = FIX / "set_b"
    audio, _ = sf.read(d / "audio.wav", dtype="float32")
    clip = Clip.from_array(audio)
    options = YourMT3Options()
    cpu = SPEC.build(SPEC.resolve(d / "tiny_model"), torch.device("cpu"), options).transcribe(clip, D24)
    gpu = SPEC.build(SPEC.resolve(d / "tiny_model"), torch.device("cuda"), options).transcribe(clip, D24)
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert gpu.tokens == cpu.tokens


def test_precision_choice():
    cpu = torch.device("cpu")
    assert all(choose_dtype(cpu, p) == torch.float32 for p in (None, "auto", "fp16", "bf16", "fp32"))
    cuda = torch.device("cuda")
    assert choose_dtype(cuda, "fp16") == torch.float16 and choose_dtype(cuda, "fp32") == torch.float32
    assert choose_dtype(cuda, "bf16") == torch.bfloat16


def test_transcribe_reproduces_upstream_tokens():
    d = FIX / "set_b"
    golden = json.loads((d / "greedy_and_notes.json").read_text())
    t = SPEC.build(SPEC.resolve(d / "tiny_model"), torch.device("cpu"), YourMT3Options())
    assert isinstance(t, Transcriber) and t.dtype == torch.float32
    audio, _ = sf.read(d / "audio.wav", dtype="float32")
    assert t.num_segments(Clip.from_array(audio)) == 2
    # Segment 0 alone (its 32767 samples): the same tokens as segment 0 of the upstream run, at half
    # the cost; the full two-segment run is covered by test_yourmt3_model.py.
    clip = Clip.from_array(audio[:32767])
    calls = []
    out = t.transcribe(clip, YourMT3Decode(max_tokens=24, batch_size=1),
                       progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]
    assert out.notes == []
    assert len(out.tokens) == 1 and len(out.tokens[0]) == 13
    for ch, gch in zip(out.tokens[0], golden["tokens"][0]):
        assert ch == gch[:len(ch)] and all(x == 0 for x in gch[len(ch):]) and len(ch) <= 24
    assert out.info["segments"] == 1 and out.info["decoding_errors"]


def test_cli_tokens_json(tmp_path, capsys):
    from mt3_demo.cli import main

    d = FIX / "set_a"
    audio, rate = sf.read(d / "audio.wav", dtype="float32")
    wav = tmp_path / "seg0.wav"
    sf.write(wav, audio[:32767], rate, subtype="FLOAT")  # segment 0 only: same tokens, half the cost
    out = tmp_path / "o.json"
    rc = main(["transcribe", str(wav), "--model", "yourmt3", "--checkpoint", str(d / "tiny_model"),
               "--max-tokens", "32", "--tokens", "--json", str(out), "--device", "cpu"])
    assert rc == 0
    payload = json.loads(out.read_text())
    golden = json.loads((d / "greedy_and_notes.json").read_text())["greedy_tokens"]
    assert [[ch + [0] * (32 - len(ch)) for ch in seg] for seg in payload["tokens"]] == golden[:1]
    assert payload["model"] == "yourmt3" and payload["notes"] == []
    # The checkpoint's file name (a loop variable used to overwrite it: it read "lm_head").
    assert payload["checkpoint"] == "last.ckpt" and payload["variant"] == "YPTF.MoE+Multi (noPS)"


def test_half_precision_path_runs():
    """The CUDA half-precision path (bf16 here, on CPU): no dtype clashes, frontend kept in float32."""
    from mt3_demo.models.yourmt3.adapter import YourMT3Transcriber
    from mt3_demo.models.yourmt3.model import load_model

    model, _ = load_model(FIX / "set_b" / "tiny_model" / "last.ckpt")
    t = YourMT3Transcriber(model, torch.device("cpu"), torch.bfloat16)
    assert t.model.spectrogram.window.dtype == torch.float32
    assert t.model.decoder.additive_pe.weight.dtype == torch.bfloat16
    audio, _ = sf.read(FIX / "set_b" / "audio.wav", dtype="float32")
    out = t.transcribe(Clip.from_array(audio[:16000]), YourMT3Decode(max_tokens=4))
    assert len(out.tokens) == 1 and all(1 <= len(ch) <= 4 for ch in out.tokens[0])


def test_encoder_passes_smaller_than_the_decoding_chunk_give_the_same_tokens():
    """On the CPU the encoder takes 2 segments at a time (memory) while the decoder takes a whole
    chunk: the golden two-segment clip gives the upstream tokens either way, and the encoder is
    called once per segment pair."""
    d = FIX / "set_b"
    golden = json.loads((d / "greedy_and_notes.json").read_text())
    t = SPEC.build(SPEC.resolve(d / "tiny_model"), torch.device("cpu"), YourMT3Options())
    assert t.encode_segments == 2 and D24.batch_size == 8
    audio, _ = sf.read(d / "audio.wav", dtype="float32")
    clip = Clip.from_array(audio)
    runs = {}
    for per_pass in (1, 8):
        t.encode_segments = per_pass
        passes = []
        encode = t.model.encode
        t.model.encode = lambda spec: passes.append(spec.shape[0]) or encode(spec)
        try:
            runs[per_pass] = t.tokens(clip.samples, D24)
        finally:
            del t.model.encode  # back to the class's method
        assert passes == ([1, 1] if per_pass == 1 else [2])
    assert runs[1] == runs[8]
    for seg, golden_seg in zip(runs[1], golden["tokens"]):
        for ch, gch in zip(seg, golden_seg):
            assert ch == gch[:len(ch)] and all(x == 0 for x in gch[len(ch):])


def test_channels_outgrowing_the_cache_budget_wait_and_give_the_same_tokens(monkeypatch):
    """The chunk's caches may grow by CACHE_GROWTH_MB past all rows' first block. With no room at
    all (a 1-byte budget, blocks of 8 positions) every growth sets channels aside to resume later:
    the golden clip's tokens are unchanged."""
    from mt3_demo.models import t5
    from mt3_demo.models.yourmt3 import adapter

    d = FIX / "set_b"
    golden = json.loads((d / "greedy_and_notes.json").read_text())
    t = SPEC.build(SPEC.resolve(d / "tiny_model"), torch.device("cpu"), YourMT3Options())
    memory = torch.zeros(2, 13, 5, t.model.dims.decoder.d_model)
    dec = t.model.dims.decoder
    first_block = dec.num_decoder_layers * 2 * dec.num_heads * dec.d_kv * (5 + t5.KVCache.FIRST) * 4
    assert t.cache_budget(memory) == 26 * first_block + adapter.CACHE_GROWTH_MB["cpu"] * 2**20

    audio, _ = sf.read(d / "audio.wav", dtype="float32")
    monkeypatch.setattr(t5.KVCache, "GROW", 8)
    monkeypatch.setattr(t, "cache_budget", lambda memory: 1)
    moved = []
    split = t5.KVCache.split
    monkeypatch.setattr(t5.KVCache, "split", lambda cache, keep, move: (
        moved.append(0 if move is None else int(move.numel())), split(cache, keep, move))[1])
    tokens = t.tokens(Clip.from_array(audio).samples, D24)
    assert any(moved)  # some channels were set aside
    for seg, golden_seg in zip(tokens, golden["tokens"]):
        for ch, gch in zip(seg, golden_seg):
            assert ch == gch[:len(ch)] and all(x == 0 for x in gch[len(ch):])
