"""The interactive player as a Gradio component (UI layer: the only player file importing gradio).

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

ASSETS = Path(__file__).resolve().parent / "assets" / "player"
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
