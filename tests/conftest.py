"""Shared test setup: offline, small thread counts, paths to the shipped fixtures and examples."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Never reach for the network in tests, and keep Gradio quiet and local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

import contextlib  # noqa: E402
import socket  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXAMPLES = ROOT / "examples_audio"
# Screenshots of the browser tests (look at them): $MT3_DEMO_ARTIFACTS, default tests/artifacts/.
ARTIFACTS = Path(os.environ.get("MT3_DEMO_ARTIFACTS", ROOT / "tests" / "artifacts"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA not available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tiny_mt3():
    """MT3's tiny fixture model (kunato's layout), on the CPU, positions as the checkpoint stores them."""
    from mt3_demo.models.mt3 import adapter

    return adapter.load_model(adapter.resolve(FIXTURES / "mt3" / "tiny_model"), "cpu", positions="checkpoint")


@pytest.fixture(scope="module")
def memory16(tiny_mt3):
    """16 encoder outputs of the tiny model: the fixture's two memories plus 14 perturbed copies,
    so greedy rows finish at many different steps."""
    import torch

    base = tiny_mt3.encode(torch.from_numpy(np.load(FIXTURES / "mt3" / "tiny_model" / "features.npy")))
    g = torch.Generator().manual_seed(0)
    noise = [base[i % 2:i % 2 + 1] * (1 + 0.05 * torch.randn(base[:1].shape, generator=g)) for i in range(14)]
    return torch.cat([base] + noise).detach()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


TINY_MT3_PTH = FIXTURES / "mt3" / "tiny_model" / "mt3.pth"


def serve_mt3_from_fake_hub(monkeypatch, folder: Path):
    """MT3 downloads ``folder/mt3.pth`` (huggingface_hub's download patched to hand out files of
    ``folder``), pinned to the tiny fixture's sha256 as if it were the published file; returns the
    MT3 adapter module."""
    import huggingface_hub

    from mt3_demo.checkpoints import HubFile, sha256_file
    from mt3_demo.models.mt3 import adapter

    def fake_download(repo_id, filename, **kw):
        if filename != "mt3.pth":
            raise FileNotFoundError(filename)
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(adapter, "HUB", HubFile("gudgud1014/MR-MT3", "mt3.pth", sha256=sha256_file(TINY_MT3_PTH)))
    monkeypatch.delenv("MT3_DEMO_CHECKPOINTS", raising=False)
    return adapter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(gradio_tmp: Path):
    """The Gradio app launched in-process on a free local port; yields its URL.

    Gradio's uploaded and returned files go to ``gradio_tmp`` so tests never share a cache.
    """
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_tmp)
    from mt3_demo.options import read_env
    from mt3_demo.ui import build_demo, launch_kwargs

    demo = build_demo(settings=read_env()[0])  # as app.py does: the environment read once, at the door
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            quiet=True, **launch_kwargs())
    try:
        yield url
    finally:
        demo.close()
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (no `playwright install`); skips without either.

    Module scope: Playwright's sync API keeps an asyncio loop marked running on the main thread while it
    is open, so a later module's ``asyncio.run`` or Ray handle ``.result()`` would refuse to run.
    """
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=args)
        yield b
        b.close()
