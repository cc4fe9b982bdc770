"""The page says only what the app knows: which weights run (official only by hash), how big a
download is (one number, the registry's), and whether the Hub can be reached (asked once)."""
from __future__ import annotations

import http.server
import json
import shutil
import threading
import time

import pytest
import torch

from conftest import FIXTURES, free_port
from mt3_demo import hub
from mt3_demo.checkpoints import HubFile
from mt3_demo.manager import ModelManager
from mt3_demo.options import Settings, read_env
from mt3_demo.provenance import provenance


@pytest.fixture
def fresh_hub(monkeypatch):
    hub.forget()
    yield monkeypatch
    hub.forget()


def test_offline_mode_answers_without_network(fresh_hub):
    settings, _ = read_env({"HF_HUB_OFFLINE": " 1", "HF_ENDPOINT": "http://192.0.2.1"})  # TEST-NET: would hang
    assert settings.hub_offline  # " 1" is offline: one reading of the variable, for every reader
    start = time.monotonic()
    reachable, why = hub.status(settings.hub_offline, settings.hf_endpoint)
    assert not reachable and "HF_HUB_OFFLINE" in why
    assert time.monotonic() - start < hub.TIMEOUT_S  # answered before any request could time out


def test_unreachable_endpoint_is_found_out_once(fresh_hub):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    calls = []
    real = hub._probe
    fresh_hub.setattr(hub, "_probe", lambda url: calls.append(url) or real(url))
    assert hub.status(False, endpoint)[0] is False
    assert "cannot be reached" in hub.status(False, endpoint)[1]
    assert len(calls) == 1  # remembered


def test_reachable_endpoint(fresh_hub):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - http.server's naming
            self.send_response(401)  # the Hub's answer without a token: still reachable
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert hub.status(False, f"http://127.0.0.1:{server.server_port}") == (True, "")
    finally:
        server.shutdown()


def test_not_downloaded_model_is_unavailable_when_hub_unreachable(fresh_hub, tmp_path):
    """Online mode, nothing cached, no Hub: MT3 cannot run, says why in one sentence."""
    fresh_hub.setenv("HF_HOME", str(tmp_path / "hf"))  # huggingface_hub's own cache: empty
    settings = Settings(hf_endpoint=f"http://127.0.0.1:{free_port()}")
    avail = ModelManager(device=torch.device("cpu"), settings=settings).availability("mt3")
    assert avail.status == "unavailable" and not avail.usable
    assert "cannot be reached" in avail.reason and avail.reason.count(". ") == 0
    assert "MT3_DEMO_CHECKPOINTS/mt3/mt3.pth" in avail.fix
    fresh_hub.setattr(hub, "status", lambda offline, endpoint: (True, ""))
    avail = ModelManager(device=torch.device("cpu"), settings=settings).availability("mt3")
    assert avail.status == "download" and avail.download_mb == pytest.approx(183.67, abs=0.01)


def test_published_sizes_match_the_specs():
    """One source of truth for download sizes: the registry's HubFile, checked against the specs."""
    manager = ModelManager(device=torch.device("cpu"))
    sizes = {m: manager.spec(m).published(None, manager.options_for(m)) for m in manager.model_ids()}
    assert sizes["transkun"] is None  # weights ship with the pip package
    assert sizes["mt3"].size_bytes == 183_672_643  # docs/models.md#mt3-checkpoint: mt3.pth's published size
    manifest = json.loads((FIXTURES / "mr_mt3" / "mrmt3_ckpt_manifest.json").read_text())
    # docs/models.md#mr-mt3-checkpoints: weights + AdamW's two moments + ~0.27 MB of pickle/zip overhead.
    expected = 3 * manifest["unique_tensor_bytes"]
    assert expected < sizes["mr_mt3"].size_bytes < expected + 1_000_000
    assert sizes["mr_mt3"].size_bytes / 1e6 == pytest.approx(582.5, abs=0.5)  # not "~0 MB", not 194
    assert sizes["yourmt3"].size_bytes == 536_000_000  # docs/models.md#the-four-models: "536 MB", last.ckpt
    assert sizes["yourmt3"].basename == "last.ckpt"


def test_weights_label_official_only_by_hash(tmp_path):
    data = b"weights" * 1000
    import hashlib

    published = HubFile("r/x", "w.pth", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    f = tmp_path / "w.pth"
    f.write_bytes(data)
    assert provenance(f, published).label == "official weights"
    f.write_bytes(data[:-1] + b"X")  # same size, other bytes
    assert provenance(f, published).label == "your checkpoint: w.pth"
    f.write_bytes(data[:10])  # far smaller than the published file: a tiny test checkpoint
    assert provenance(f, published).kind == "test"
    assert provenance(f, None).kind == "embedded"


def test_tiny_fixtures_are_labelled_test_weights(tmp_path):
    root = tmp_path / "ck"
    for model_id, src in {"mt3": FIXTURES / "mt3/tiny_model/mt3.pth",
                          "mr_mt3": FIXTURES / "mr_mt3/set_b/model.ckpt",
                          "yourmt3": FIXTURES / "yourmt3/set_a/tiny_model/last.ckpt"}.items():
        (root / model_id).mkdir(parents=True)
        shutil.copy(src, root / model_id / src.name)
    manager = ModelManager(device=torch.device("cpu"), settings=Settings(checkpoints_root=root))
    for model_id in ("mt3", "mr_mt3", "yourmt3"):
        avail = manager.availability(model_id)
        assert avail.status == "ready"
        assert avail.weights.startswith("test weights: "), avail.weights
        assert "official" not in avail.weights
    assert manager.availability("transkun").weights == "weights from its pip package"


def test_a_page_load_resolves_each_model_once(tmp_path, monkeypatch):
    """The offered list, labels, 'not available' list, header and default selection of one page
    load share one availability snapshot: each model's weights are resolved (and hashed) once."""
    from mt3_demo.ui import handlers

    root = tmp_path / "ck"
    (root / "mt3").mkdir(parents=True)
    shutil.copy(FIXTURES / "mt3/tiny_model/mt3.pth", root / "mt3" / "mt3.pth")
    manager = ModelManager(device=torch.device("cpu"), settings=Settings(checkpoints_root=root, hub_offline=True))
    calls: dict[str, int] = {}
    resolve = ModelManager.resolve

    def counting(self, model_id, fetch=True):
        calls[model_id] = calls.get(model_id, 0) + 1
        return resolve(self, model_id, fetch)

    monkeypatch.setattr(ModelManager, "resolve", counting)
    choices, unavailable_html, header, *_ = handlers.refresh_page(manager, None, list(manager.model_ids()))
    assert calls == {m: 1 for m in manager.model_ids()}
    assert sorted(value for _, value in choices["choices"]) == ["mt3", "transkun"]
    assert choices["value"] == ["mt3", "transkun"]
    assert "MR-MT3" in unavailable_html and "test weights" in header
