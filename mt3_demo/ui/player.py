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
from ..notes import Note
from ..results import ModelResult, Run

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


def synth_name(method: str | None) -> str:
    """Say honestly which synthesizer made a model's sound (the fallback cannot sound like FluidSynth)."""
    return "FluidSynth" if (method or "").startswith("fluidsynth") else "simple synth, drums silent"


def results_payload(component: gr.HTML, results: list[ModelResult], duration: float, original: str | None,
                    reference: list[Note] | None = None, reference_name: str | None = None) -> str:
    """Payload for the models finished so far (failed ones left out; none yet: the original alone);
    ``original`` is the recording's path. Sources: the original, then per model its rendering
    (level-matched to the original) and original-left / transcription-right, as the run wrote them
    (a model without notes has none: nothing silent is offered)."""
    ok = [r for r in results if r.ok]
    sources = [{"id": "original", "label": "Original recording", "path": original}] if original else []
    for r in ok:
        if "audio_matched" in r.files:
            sources.append({"id": r.model_id, "label": f"{r.display_name} ({synth_name(r.synth_method)})",
                            "path": str(r.files["audio_matched"])})
        if "mix" in r.files:
            sources.append({"id": f"{r.model_id}-mix", "label": f"Original L / {r.display_name} R",
                            "path": str(r.files["mix"])})
    rolls = [(r.model_id, r.display_name, r.transcription.notes) for r in ok]
    return payload_json(rolls, duration, served_sources(component, sources), reference=reference,
                        reference_name=reference_name or "reference")


def run_payload(component: gr.HTML, run: Run, original: str | None) -> str:
    """Payload for a finished :class:`~mt3_demo.results.Run` (see :func:`results_payload`)."""
    return results_payload(component, run.results, run.clip.duration, original, run.reference, run.reference_name)
