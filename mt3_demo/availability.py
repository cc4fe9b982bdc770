"""Can a model run here, and what does the page say about it? Wording and Hub status, no loading.

:func:`availability` resolves a model's checkpoint with ``fetch=False`` (downloads and writes
nothing) and turns the outcome into an :class:`Availability`: "ready" (the weights are here, and
which ones), "download" (fetched on first use, when the Hub answers: :mod:`mt3_demo.hub`) or
"unavailable" with the reason and the fix taken from the structured
:class:`~mt3_demo.checkpoints.CheckpointError` (``reason``, ``fix``) — never parsed back from text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import hub
from .checkpoints import CheckpointError, NotDownloaded
from .models.base import ModelSpec
from .provenance import provenance


@dataclass
class Availability:
    """What the UI shows next to a model's checkbox.

    ``reason`` is one short sentence (why it cannot run, or what will be downloaded), ``fix`` how to
    make it run (shown behind a "details" toggle), ``weights`` which weights would run (ready models:
    "official weights", "your checkpoint: <file>", "test weights: <file> …"), ``download_mb`` the
    published file's size for a model fetched on first use.
    """

    status: str  # "loaded" (in memory), "ready" (files here), "download" (fetched on first use), "unavailable"
    reason: str = ""
    fix: str = ""
    weights: str = ""
    download_mb: float | None = None

    @property
    def usable(self) -> bool:
        return self.status in ("loaded", "ready", "download")

    def error(self, model_id: str) -> str:
        """The one-line message of a run refused for this (the CLI's and the results' wording)."""
        return f"{model_id}: {self.reason}" + (f" To fix: {self.fix}" if self.fix else "")


def sentence(text: str, model_id: str = "") -> str:
    """A reason as the page shows it: without the "<model_id>: " it starts with, capitalised, one
    final full stop."""
    text = text.strip()
    if model_id and text.startswith(model_id + ": "):
        text = text[len(model_id) + 2:]
    text = text.rstrip(". ")
    text += "" if text.endswith(("?", "!")) else "."
    return text[:1].upper() + text[1:]


def availability(spec: ModelSpec, resolve: Callable[[bool], Any], options: Any,
                 hub_status: Callable[[], tuple[bool, str]] = hub.status) -> Availability:
    """Are ``spec``'s weights here (and which), downloadable now, or missing (with the fix)?

    ``resolve(fetch)`` is the manager's one resolution of this model; ``hub_status()`` asks whether
    the Hub can be reached (asked once, remembered, in :mod:`mt3_demo.hub`).
    """
    try:
        location = resolve(False)
    except NotDownloaded as e:
        size = e.hub.size_bytes / 1e6 if e.hub is not None and e.hub.size_bytes else None
        reachable, why = hub_status()
        if reachable:
            return Availability("download", str(e), e.fix, download_mb=size)
        return Availability("unavailable", f"Weights not on this machine; {why}.", e.fix)
    except CheckpointError as e:
        return Availability("unavailable", sentence(e.reason, spec.id), e.fix)
    except Exception as e:  # noqa: BLE001 - any adapter bug shows as unavailable
        return Availability("unavailable", f"Its adapter failed to resolve the weights ({type(e).__name__}).",
                            str(e))
    try:
        weights = provenance(location, spec.published(location, options), spec.packaged(location)).label
    except OSError as e:
        return Availability("unavailable", f"Its weights file cannot be read ({type(e).__name__}).", str(e))
    return Availability("ready", "weights found locally", weights=weights)
