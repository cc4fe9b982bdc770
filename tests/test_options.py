"""Issue 13.4: every numeric option and environment variable is checked once, in ``options``,
with a clear message and exit code 2 — before any audio is decoded or model loaded."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from mt3_demo.audio import load_clip
from mt3_demo.cli import EXIT_USAGE, main
from mt3_demo.options import (MRMT3Options, MT3Options, OptionError, Settings, TranskunOptions, model_options,
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
])
def test_bad_environment_variable_is_a_usage_error(wav, capsys, monkeypatch, no_model_runs, var, value):
    monkeypatch.setenv(var, value)
    assert main(["transcribe", str(wav)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert var in err and "Traceback" not in err
    # The app does not stop on it: the variable keeps its default and the problem is reported.
    settings, problems = read_env()
    assert len(problems) == 1 and var in problems[0]
    assert settings == Settings(eager=settings.eager)


def test_nan_limit_refuses_instead_of_accepting(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(3 * 16000), 16000)
    with pytest.raises(OptionError, match="max_seconds"):
        load_clip(path, limit_seconds=math.nan)
    monkeypatch.setenv("MT3_DEMO_MAX_SECONDS", "nan")
    with pytest.raises(OptionError, match="MT3_DEMO_MAX_SECONDS"):
        load_clip(path)  # the library path reads the same checked settings
    monkeypatch.setenv("MT3_DEMO_MAX_SECONDS", "2")
    assert settings_from_env().max_seconds == 2.0


def test_model_options_take_what_applies_and_keep_defaults():
    flags = {"compat": "kunato", "max_tokens": 12, "frontend": None, "memory_length": None}
    assert model_options(MT3Options, flags) == MT3Options(compat="kunato", max_tokens=12)
    assert model_options(MRMT3Options, flags) == MRMT3Options(max_tokens=12)
    assert model_options(TranskunOptions, flags) == TranskunOptions()
    with pytest.raises(OptionError, match="whole number"):
        MT3Options(max_tokens=2.5)
    with pytest.raises(OptionError, match="hop_s"):
        TranskunOptions(hop_s=math.nan)
