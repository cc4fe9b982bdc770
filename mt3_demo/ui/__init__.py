"""The Gradio app — the only part of mt3_demo that imports gradio.

layout      where components sit and which handler each event calls (``build_demo``)
components  the page's component groups (a model card, the page), named for handlers
handlers    what events do: run a request, fill the cards and tabs, the API endpoint
session     one request without Gradio: checks, its own folder, the pipeline, the page's state
render      HTML from a Run / ModelResult / the registry (pure functions)
leakage_view  the instrument-leakage table of the Scores tab (pure function of a Run)
player      the interactive piano rolls: a ``gr.HTML`` running ``assets/player/player.js``
zerogpu     the ``spaces.GPU`` wrapper on ZeroGPU Spaces
"""
from .layout import build_demo, launch_kwargs

__all__ = ["build_demo", "launch_kwargs"]
