"""The interactive player as a Gradio component (the player's only file importing gradio).

``player_component()`` makes a ``gr.HTML`` whose value is the JSON payload of
:func:`mt3_demo.player.payload_json`; the shipped ``assets/player/player.js`` (run through
``gr.HTML``'s ``js_on_load`` hook, re-initialised by its ``watch('value', ...)``) draws the rolls and
the transport, ``assets/player/player.css`` goes in as the component's ``css_template``. Nothing is
loaded from a network. Audio sources given as ``{"path": ...}`` are fetched through Gradio's file
route, so they must lie in Gradio's temp/cache folder or in ``allowed_paths``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import gradio as gr

from ..player import payload_json
from ..results import Run

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "player"
TEMPLATE = '<div class="mt3-player"></div>'  # static: the script builds everything inside it


@lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def player_component(value: str | None = None, **kwargs) -> gr.HTML:
    """A ``gr.HTML`` showing the player for ``value`` (a payload JSON string, or None for the
    placeholder). Update it like any output: return a new payload string from an event handler.
    ``kwargs`` go to ``gr.HTML`` (e.g. ``elem_id``, ``visible``)."""
    css = _asset("player.css")
    if "${" in css:  # css_template is a JS template string: "${" would be evaluated
        raise ValueError("player.css must not contain '${'")
    return gr.HTML(value=value, html_template=TEMPLATE, css_template=css, js_on_load=_asset("player.js"),
                   apply_default_css=False, container=False, padding=False, **kwargs)


def served_sources(component: gr.HTML, sources: list[dict]) -> list[dict]:
    """The sources with each ``path`` copied into Gradio's cache (hash-named, so a file an Audio
    component already shows is not copied twice): the page may fetch only cached or allowed files."""
    out = []
    for s in sources:
        s = dict(s)
        if s.get("path"):
            s["path"] = component.move_resource_to_block_cache(s["path"])
        out.append(s)
    return out


def run_payload(component: gr.HTML, run: Run, original: str | None) -> str:
    """Payload for a finished :class:`~mt3_demo.results.Run` (failed models left out); ``original``
    is the recording's path. Sources: the original, then per model its rendering (level-matched to
    the original) and original-left / transcription-right, as the run wrote them."""
    ok = run.ok_results
    sources = [{"id": "original", "label": "Original recording", "path": original}] if original else []
    for r in ok:
        if "audio_matched" in r.files:
            sources.append({"id": r.model_id, "label": f"{r.display_name} (synthesized)",
                            "path": str(r.files["audio_matched"])})
        if "mix" in r.files:
            sources.append({"id": f"{r.model_id}-mix", "label": f"Original L / {r.display_name} R",
                            "path": str(r.files["mix"])})
    rolls = [(r.model_id, r.display_name, r.transcription.notes) for r in ok]
    return payload_json(rolls, run.clip.duration, served_sources(component, sources), reference=run.reference,
                        reference_name=run.reference_name or "reference")
