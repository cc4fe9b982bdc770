"""The page's Leaderboard tab: an ``evaluate`` output folder (``MT3_DEMO_LEADERBOARD``) shown as its
table, its F1 plot and what produced it (data, split, models, options, when).

The folder is read again on every page load, so an evaluation that finishes while the app runs
shows up without a restart. No setting: no tab.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from ..evaluate.run import SUMMARY


def _options_text(options: dict[str, Any]) -> str:
    parts = []
    for model_id, record in options.items():
        values = {**(record.get("load") or {}), **(record.get("decode") or {})}
        chosen = ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)
        parts.append(f"`{model_id}`" + (f" ({chosen})" if chosen else ""))
    return "; ".join(parts)


def leaderboard_markdown(folder: Path) -> str:
    """Where the numbers come from, then ``table.md``; a sentence when the folder has no evaluation."""
    folder = Path(folder)
    summary_path, table_path = folder / SUMMARY, folder / "table.md"
    if not summary_path.is_file():
        return (f"No evaluation in `{folder.name}` yet. Run `python -m mt3_demo evaluate DATA --models "
                f"transkun,mt3 --out {folder.name}` and reload the page.")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except ValueError:
        return f"`{folder.name}/{SUMMARY}` cannot be read; is an evaluation writing it right now? Reload."
    split = f", split **{summary['split']}**" if summary.get("split") else ""
    when = f"started {summary.get('created', '?')}"
    if summary.get("complete"):
        when += f", finished {summary.get('finished', '?')}"
    else:
        when += " — **still running** (the table below is of its last complete run, if any)"
    lines = [f"Dataset **{Path(summary.get('data', '?')).name}** ({summary.get('layout')} layout{split}, "
             f"{summary.get('tracks')} tracks); models: {_options_text(summary.get('options', {}))}.",
             "", f"Evaluation {when}.", ""]
    if table_path.is_file():
        for line in table_path.read_text(encoding="utf-8").splitlines():  # headings under the tab's
            lines.append("#" * 2 + line if line.startswith("#") else line)
    return "\n".join(lines)


def _plot(folder: Path) -> Any:
    """The F1 plot as an image array (not a path: the folder need not be one Gradio may serve)."""
    path = Path(folder) / "f1.png"
    if not path.is_file():
        return None
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def add_tab(demo: gr.Blocks, folder: str | None) -> None:
    """A Leaderboard tab for ``folder`` (``Settings.leaderboard``), refreshed on each page load;
    nothing when ``folder`` is None. Called inside the page's ``gr.Tabs`` (Gradio wraps a lone tab
    in one)."""
    if not folder:
        return
    with gr.Tab("Leaderboard", elem_id="tab-leaderboard"):
        table = gr.Markdown(leaderboard_markdown(Path(folder)), elem_id="leaderboard-table")
        plot = gr.Image(_plot(Path(folder)), type="pil", show_label=False, interactive=False,
                        elem_id="leaderboard-plot")
    demo.load(lambda: (leaderboard_markdown(Path(folder)), _plot(Path(folder))), outputs=[table, plot],
              api_visibility="private", queue=False)
