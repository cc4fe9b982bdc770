"""Shared test setup: offline, small thread counts, paths to the shipped fixtures and examples."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Never reach for the network in tests, and keep Gradio quiet and local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = ROOT / "examples_audio"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")
    config.addinivalue_line("markers", "slow: runs a real model on real audio")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA not available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture
def tone_wav(tmp_path):
    """Write a short stereo 44.1 kHz tone and return its path."""
    import soundfile as sf

    def make(name="tone.wav", seconds=1.0, rate=44100, channels=2, amplitude=0.3, subtype="PCM_16"):
        t = np.arange(int(seconds * rate)) / rate
        x = amplitude * np.sin(2 * np.pi * 440 * t)
        data = np.stack([x] * channels, axis=1) if channels > 1 else x
        path = tmp_path / name
        sf.write(path, data, rate, subtype=subtype) if subtype else sf.write(path, data, rate)
        return path

    return make
