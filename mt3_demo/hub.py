"""Is the Hugging Face Hub reachable from here? Asked once, answered in seconds, remembered.

A model whose weights would have to be downloaded can only run when the Hub answers. Without this
check an offline machine offers such a model, and a run then spends ~30 s in download retries
before failing. Offline mode (``Settings.hub_offline``: ``HF_HUB_OFFLINE``) answers without
touching the network; otherwise one request with a short timeout goes to the endpoint
(``Settings.hf_endpoint``: ``HF_ENDPOINT``, default https://huggingface.co), and its answer is kept
for ``TTL_S`` seconds (a later page load may find the network back).
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

from .options import DEFAULT_HF_ENDPOINT as DEFAULT_ENDPOINT
from .options import OFFLINE_ENV
TIMEOUT_S = 3.0  # a reachable Hub answers well within this; an unreachable one costs at most this
TTL_S = 600.0

_lock = threading.Lock()
_cache: dict[str, tuple[float, bool, str]] = {}  # endpoint -> (checked at, reachable, why not)


def status(offline: bool = False, endpoint: str = DEFAULT_ENDPOINT) -> tuple[bool, str]:
    """(reachable, why not — one short sentence, empty when reachable); ``offline`` and
    ``endpoint`` from :class:`~mt3_demo.options.Settings`."""
    if offline:
        return False, f"offline mode is on ({OFFLINE_ENV}=1)"
    url = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    with _lock:  # one probe at a time; concurrent page loads wait for its answer
        cached = _cache.get(url)
        if cached is not None and time.monotonic() - cached[0] < TTL_S:
            return cached[1], cached[2]
        reachable, why = _probe(url)
        _cache[url] = (time.monotonic(), reachable, why)
        return reachable, why


def reachable(offline: bool = False, endpoint: str = DEFAULT_ENDPOINT) -> bool:
    return status(offline, endpoint)[0]


def forget() -> None:
    """Drop the remembered answer (tests; a host that knows its network changed)."""
    with _lock:
        _cache.clear()


def _probe(url: str) -> tuple[bool, str]:
    """Any HTTP answer, even an error status, means the Hub can be reached."""
    request = urllib.request.Request(url + "/api/whoami-v2", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S):
            return True, ""
    except urllib.error.HTTPError:
        return True, ""
    except (urllib.error.URLError, OSError, ValueError) as e:
        log.info("Hugging Face Hub %s not reachable: %s", url, getattr(e, "reason", e))
        return False, "the Hugging Face Hub cannot be reached from here"
