"""Issue 13.4: every numeric option and environment variable is checked once, in ``options``,
with a clear message and exit code 2 — before any audio is decoded or model loaded."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import soundfile as sf

from mt3_demo.audio import load_clip
from mt3_demo.cli import EXIT_USAGE, main
from mt3_demo.options import (MRMT3Decode, MT3Decode, MT3Options, OptionError, Settings,
                              TranskunDecode, TranskunOptions, YourMT3Decode, decode_options, model_options,
                              read_env, settings_from_env)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(16000) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    return path


@pytest.fixture
def no_model_runs(monkeypatch):
    """A refused option must stop the CLI before any model runs."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model ran although an option was refused")

    monkeypatch.setattr("mt3_demo.pipeline.transcribe_one", refuse)


@pytest.mark.parametrize("flags, named", [
    (["--max-seconds", "nan"], "max_seconds"),  # used to switch the length check off
    (["--max-seconds", "-1"], "max_seconds"),  # used to print "the limit is -1 min 59 s"
    (["--max-seconds", "0"], "max_seconds"),
    (["--max-seconds", "inf"], "max_seconds"),
    (["--model", "mt3", "--max-tokens", "-5"], "max_tokens"),  # used to give 0 notes silently
    (["--model", "mt3", "--max-tokens", "0"], "max_tokens"),  # used to mean 1024 silently
    (["--model", "transkun", "--max-tokens", "0"], "max_tokens"),  # checked even where unused
    (["--model", "mr_mt3", "--memory-length", "-1"], "memory_length"),
    (["--model", "mr_mt3", "--memory-length", "4096"], "memory_length"),
    (["--model", "mt3", "--compat", "hf"], "compat"),
    (["--model", "mr_mt3", "--frontend", "librosa"], "frontend"),
    (["--precision", "fp8"], "precision"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_flag_is_a_usage_error(wav, capsys, no_model_runs, flags, named):
    assert main(["transcribe", str(wav), *flags]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and "Traceback" not in err


@pytest.mark.parametrize("var, value", [
    ("MT3_DEMO_MAX_SECONDS", "nan"), ("MT3_DEMO_MAX_SECONDS", "-1"), ("MT3_DEMO_MAX_SECONDS", "ten"),
    ("MT3_DEMO_MEMORY_BUDGET_MB", "0"), ("MT3_DEMO_MEMORY_BUDGET_MB", "nan"),
    ("MT3_DEMO_CONCURRENCY", "0"), ("MT3_DEMO_QUEUE_SIZE", "-3"), ("MT3_DEMO_QUEUE_SIZE", "2.5"),
    ("MT3_DEMO_THREADS", "0"), ("MT3_DEMO_THREADS", "lots"), ("MT3_DEMO_RUNS_MAX_MB", "nan"),
    ("MT3_DEMO_RUNS_MAX_MB", "-5"),
    # Upper bounds (issue 21.4): each used to be accepted and to break every request.
    ("MT3_DEMO_RUNS_MAX_MB", "1e308"), ("MT3_DEMO_THREADS", "512"), ("MT3_DEMO_THREADS", "1e11"),
    ("MT3_DEMO_MAX_SECONDS", "1e9"), ("MT3_DEMO_CONCURRENCY", "1000"), ("MT3_DEMO_QUEUE_SIZE", "1000000"),
    ("MT3_DEMO_MEMORY_BUDGET_MB", "1e308"),
])
def test_bad_environment_variable_is_a_usage_error(wav, capsys, monkeypatch, no_model_runs, var, value):
    monkeypatch.setenv(var, value)
    assert main(["transcribe", str(wav)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert var in err and "Traceback" not in err
    # The app does not stop on it: the variable keeps its default and the problem is reported.
    settings, problems = read_env()
    assert len(problems) == 1 and var in problems[0]
    assert settings == read_env({k: v for k, v in os.environ.items() if k != var})[0]


def test_nan_limit_refuses_instead_of_accepting(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(3 * 16000), 16000)
    with pytest.raises(OptionError, match="max_seconds"):
        load_clip(path, limit_seconds=math.nan)
    monkeypatch.setenv("MT3_DEMO_MAX_SECONDS", "nan")
    with pytest.raises(OptionError, match="MT3_DEMO_MAX_SECONDS"):
        settings_from_env()  # the doors read the same checked settings
    monkeypatch.setenv("MT3_DEMO_MAX_SECONDS", "2")
    assert settings_from_env().max_seconds == 2.0


def test_model_options_take_what_applies_and_keep_defaults():
    flags = {"compat": "kunato", "max_tokens": 12, "frontend": None, "memory_length": None}
    assert model_options(MT3Options, flags) == MT3Options(compat="kunato")
    assert model_options(MT3Decode, flags) == MT3Decode(max_tokens=12)
    assert model_options(MRMT3Decode, flags) == MRMT3Decode(max_tokens=12)
    assert model_options(TranskunOptions, flags) == TranskunOptions()
    assert model_options(TranskunDecode, flags) == TranskunDecode()
    with pytest.raises(OptionError, match="whole number"):
        MT3Decode(max_tokens=2.5)
    with pytest.raises(OptionError, match="hop_s"):
        TranskunDecode(hop_s=math.nan)


# ------------------------------------------------------------------------------------------------
# Issue 20: decode options (per request) validated like every other option; Settings bounded


@pytest.mark.parametrize("make, named", [
    (lambda: MT3Decode(max_tokens=0), "max_tokens must be at least 1"),
    (lambda: MT3Decode(max_tokens=2048), "at most 2047"),  # the 2048-row position table, start token first
    (lambda: MRMT3Decode(max_tokens=2048), "at most 2047"),
    (lambda: YourMT3Decode(max_tokens=1035), "at most 1034"),
    (lambda: MT3Decode(trim="hf"), "trim must be one of"),
    (lambda: MRMT3Decode(trim=None), "trim must be one of"),
    (lambda: MT3Decode(stop_at_eos="no"), "stop_at_eos must be true or false"),
    (lambda: MT3Decode(batch_size=0), "batch_size must be at least 1"),
    (lambda: YourMT3Decode(batch_size=10**6), "batch_size must be at least 1 and at most"),
    (lambda: TranskunDecode(segment_s=-1), "segment_s must be a positive number"),
    (lambda: MT3Decode(max_tokens=True), "whole number"),
])
def test_bad_decode_option_is_refused_with_a_sentence(make, named):
    with pytest.raises(OptionError, match=named) as e:
        make()
    assert str(e.value).endswith(".") and "\n" not in str(e.value)


def test_decode_options_from_json_like_values():
    assert decode_options(MT3Decode, None) == MT3Decode()
    assert decode_options(MT3Decode, {"max_tokens": 64, "trim": None}) == MT3Decode(max_tokens=64)
    with pytest.raises(OptionError, match="mt3 options: unknown option 'max_token'; known: max_tokens"):
        decode_options(MT3Decode, {"max_token": 64}, "mt3")
    with pytest.raises(OptionError, match="mt3 options: max_tokens must be"):
        decode_options(MT3Decode, {"max_tokens": -1}, "mt3")
    with pytest.raises(OptionError, match="must be an object"):
        decode_options(MT3Decode, [64], "mt3")


def test_settings_bounds_name_the_variable_and_its_range():
    settings, problems = read_env({"MT3_DEMO_RUNS_MAX_MB": "1e308"})
    assert settings.runs_max_mb == Settings().runs_max_mb
    assert problems == ["MT3_DEMO_RUNS_MAX_MB='1e308' is not usable: runs_max_mb must be a number of megabytes "
                        "above 0 and at most 1048576, not 1e+308."]
    with pytest.raises(OptionError, match="threads must be at least 1 and at most 64, not 512"):
        Settings(threads=512)
    with pytest.raises(OptionError, match="concurrency must be at least 1 and at most 64"):
        Settings(concurrency=65)
    with pytest.raises(OptionError, match="max_seconds must be at most 86400"):
        Settings(max_seconds=86401.0)
    assert Settings(threads=64, concurrency=64, max_seconds=86400.0, queue_size=10_000).threads == 64


def test_on_off_variables_are_read_one_way():
    """HF_HUB_OFFLINE used to be parsed two ways (" 1" offline for one reader, online for the other)."""
    for value in ("1", " 1", "true", "YES", "on "):
        assert read_env({"HF_HUB_OFFLINE": value})[0].hub_offline is True
    for value in ("", "0", "off", "no"):
        assert read_env({"HF_HUB_OFFLINE": value})[0].hub_offline is False
    assert read_env({"MT3_DEMO_CUDA_GRAPHS": "0"})[0].cuda_graphs is False
    assert read_env({})[0].cuda_graphs is True
    zero_gpu = read_env({"SPACES_ZERO_GPU": "true"})[0]
    assert zero_gpu.zero_gpu and zero_gpu.eager  # ZeroGPU loads every model at start-up


def test_environment_is_read_only_at_the_doors():
    """Issue 20: inside the package only options.py (and cli.py) read the environment; app.py is
    the other door. Everything else gets Settings or plain values as arguments."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "mt3_demo"
    reads = re.compile(r"\bos\.environ\b|\bos\.getenv\b|\bgetenv\(|\bfrom os import\b.*\benviron\b|\benviron\[")
    allowed = {package / "options.py", package / "cli.py"}
    offenders = [f"{path.relative_to(package.parent)}:{n}" for path in sorted(package.rglob("*.py"))
                 if path not in allowed
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if reads.search(line)]
    assert offenders == []
    assert reads.search((package / "options.py").read_text())  # the check can find a read
