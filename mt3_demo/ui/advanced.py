"""The page's "Advanced" section: each model's per-request decode options (never a reload).

One collapsed accordion per model with a control per decode option of its ``decode_type``
(``mt3_demo.options``: max tokens, trimming, stop at EOS, batch size; Transkun's segment and hop).
What the controls hold is checked by the options' own rules — the CLI's — and a bad value is
answered at its control, before the request joins the queue. The ``/transcribe`` API takes the
same options as a JSON string (:func:`mt3_demo.options.decode_from_json`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import gradio as gr

from ..availability import Availability
from ..manager import ModelManager
from ..options import TRIM_MODES, OptionError, decode_from_json, decode_options

# What a person may set here; ``cuda_graphs`` is the operator's (Settings, MT3_DEMO_CUDA_GRAPHS).
HELP = {
    "max_tokens": "Most tokens decoded per segment (YourMT3+: per channel). Empty: the model's own limit.",
    "trim": "How a segment's tokens end: magenta (a segment without EOS is kept) or kunato (it is dropped).",
    "stop_at_eos": "Stop a segment at its end token (off: always decode max tokens).",
    "batch_size": "Segments decoded together. Empty: chosen by device and memory.",
    "segment_s": "Seconds per window. Empty: the model's 16 s.",
    "hop_s": "Seconds between windows.",
}
LABELS = {"max_tokens": "Max tokens", "trim": "Trimming", "stop_at_eos": "Stop at EOS", "batch_size": "Batch size",
          "segment_s": "Segment (s)", "hop_s": "Hop (s)"}


@dataclass
class Advanced:
    """The controls, in order, and the (model id, option name) each one sets."""

    components: list[Any]
    fields: list[tuple[str, str]]
    panels: dict[str, Any] = dataclasses.field(default_factory=dict)  # model id -> its accordion

    def values(self, values: Sequence[Any]) -> dict[str, dict[str, Any]]:
        """The controls' values by model: {model id: {option: value}} (empty controls left out)."""
        out: dict[str, dict[str, Any]] = {}
        for (model_id, name), value in zip(self.fields, values):
            if value is not None and value != "":
                out.setdefault(model_id, {})[name] = value
        return out


def _control(name: str, default: Any) -> Any:
    label, info = LABELS.get(name, name), HELP.get(name)
    if name == "trim":
        return gr.Dropdown(choices=list(TRIM_MODES), value=default, label=label, info=info)
    if isinstance(default, bool):
        return gr.Checkbox(value=default, label=label, info=info)
    whole = name in ("max_tokens", "batch_size")
    return gr.Number(value=default, label=label, info=info, precision=0 if whole else None, minimum=0)


def controls(manager: ModelManager, avail: dict[str, Availability] | None = None) -> Advanced:
    """One collapsed "Advanced" accordion per model, with its decode options at their defaults;
    hidden for a model that cannot run here (``avail``, the page's snapshot; each page load refreshes)."""
    components, fields, panels = [], [], {}
    for model_id in manager.model_ids():
        spec = manager.spec(model_id)
        shown = [f for f in dataclasses.fields(spec.decode_type) if f.name in HELP]
        if not shown:
            continue
        defaults = spec.decode_type()
        visible = avail is None or avail[model_id].usable
        with gr.Accordion(f"Advanced · {spec.display_name}", open=False, elem_classes="advanced-options",
                          elem_id=f"advanced-{model_id}", visible=visible) as panel:
            for f in shown:
                components.append(_control(f.name, getattr(defaults, f.name)))
                fields.append((model_id, f.name))
        panels[model_id] = panel
    return Advanced(components, fields, panels)


def decode(manager: ModelManager, advanced: Advanced, values: Sequence[Any]) -> dict[str, Any]:
    """Each model's decode options from the controls (:class:`OptionError` for a bad value)."""
    return {m: decode_options(manager.spec(m).decode_type, v, m) for m, v in advanced.values(values).items()}


def checks(manager: ModelManager, advanced: Advanced, values: Sequence[Any]) -> list[dict]:
    """One ``gr.validate`` per control, for Gradio's validator: each value by its option's rule."""
    out = []
    for (model_id, name), value in zip(advanced.fields, values):
        try:
            if value is not None and value != "":
                decode_options(manager.spec(model_id).decode_type, {name: value}, model_id)
            out.append(gr.validate(True, ""))
        except OptionError as e:
            out.append(gr.validate(False, str(e)))
    return out


def from_json(manager: ModelManager, text: str | None) -> dict[str, Any]:
    """The API's ``options`` argument: ``{"mt3": {"max_tokens": 64}, ...}`` (:class:`OptionError`)."""
    return decode_from_json(text, {m: manager.spec(m).decode_type for m in manager.model_ids()})
