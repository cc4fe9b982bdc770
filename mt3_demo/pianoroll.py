"""Piano-roll pictures of transcriptions, with one colour per instrument family everywhere.

Only matplotlib's object-oriented API is used (a bare :class:`~matplotlib.figure.Figure` drawn by
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`): pyplot keeps global state and the app
renders rolls from worker threads, one per model.

Design choices, so columns of different models compare by eye:

* the x axis always runs from 0 to the clip duration (not to the last note), so every model's roll of
  one clip shares the same time scale;
* colour encodes the instrument *family* (:func:`family_color`, a fixed palette also used by the UI);
  instruments of one family get nearby shades of that colour;
* velocity is not drawn: MT3 checkpoints predict a single velocity bin, so it would mislead;
* drums are onsets, not pitches: they get their own lane below the pitched notes, one row per kind
  of drum (kick, snare, hi-hat, ...), drawn as tick marks.
"""
from __future__ import annotations

import io
import zlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import pretty_midi

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .instruments import (DRUM_KIND_ORDER, DRUMS, GM_FAMILIES, drum_kind, instrument_family, instrument_key,
                          instrument_name)
from .notes import Note

# ------------------------------------------------------------------------------------------------
# Colours

# One fixed colour per General MIDI family (+ drums and the custom labels models emit). Fixed rather
# than cycled so a family looks the same in every plot, every model column and the UI's legend.
FAMILY_COLORS: dict[str, str] = {
    "Piano": "#1f77b4",
    "Chromatic Percussion": "#17becf",
    "Organ": "#9467bd",
    "Guitar": "#2ca02c",
    "Bass": "#8c564b",
    "Strings": "#d62728",
    "Ensemble": "#e377c2",
    "Brass": "#ff7f0e",
    "Reed": "#bcbd22",
    "Pipe": "#35978f",
    "Synth Lead": "#7fc97f",
    "Synth Pad": "#bc80bd",
    "Synth Effects": "#b15928",
    "Ethnic": "#fb9a99",
    "Percussive": "#6a3d9a",
    "Sound Effects": "#a6cee3",
    DRUMS: "#333333",
    "Singing Voice": "#c51b7d",
}
assert all(f in FAMILY_COLORS for f in GM_FAMILIES)

# Labels nobody planned for still get a stable colour: picked by a hash of the name (crc32 rather
# than hash(), which is salted per process and would change colours between runs).
_SPARE_COLORS = ["#4d9221", "#2166ac", "#b2182b", "#8073ac", "#e08214", "#35978f", "#762a83"]


def family_color(family: str) -> str:
    """Hex colour of an instrument family (see :func:`mt3_demo.instruments.instrument_family`)."""
    if family in FAMILY_COLORS:
        return FAMILY_COLORS[family]
    if family.lower().startswith("sing") or "voice" in family.lower() or "vocal" in family.lower():
        return FAMILY_COLORS["Singing Voice"]
    return _SPARE_COLORS[zlib.crc32(family.encode("utf-8")) % len(_SPARE_COLORS)]


# Shade offsets by position inside the GM family (program % 8): 0 keeps the family colour, positive
# mixes towards white, negative towards black. Small enough that the family stays recognisable.
_SHADES = [0.0, -0.18, 0.22, -0.32, 0.36, -0.1, 0.12, 0.28]


def _shade(color: str, amount: float) -> str:
    from matplotlib.colors import to_hex, to_rgb

    rgb = np.array(to_rgb(color))
    target = np.ones(3) if amount > 0 else np.zeros(3)
    return to_hex(rgb + (target - rgb) * abs(amount))


def instrument_color(program: int, is_drum: bool = False, label: str | None = None) -> str:
    """Colour of one instrument: its family's colour, shaded by its place within the family."""
    family = instrument_family(program, is_drum, label)
    base = family_color(family)
    if is_drum or label:
        return base
    return _shade(base, _SHADES[int(program) % 8])


# ------------------------------------------------------------------------------------------------
# Rendering

_MAX_LEGEND = 20  # rows that fit beside a 360 px tall roll
FIGSIZE = (9.0, 3.6)  # inches; at DPI gives ~900 x 360 px, a model column on a laptop screen
DPI = 100


def _legend_sort_key(key: tuple) -> tuple:
    is_drum, program, label = key
    # Family order of General MIDI, custom labels after the GM families, drums last.
    return (is_drum, label is not None, program, label or "")


def _select(notes: Sequence[Note], only_instrument: str | None) -> list[Note]:
    if not only_instrument:
        return list(notes)
    return [
        n for n in notes
        if only_instrument in (
            instrument_name(n.program, n.is_drum, n.label),
            instrument_family(n.program, n.is_drum, n.label),
        )
    ]


def _figure(**kwargs) -> Figure:
    """A bare Figure with an Agg canvas attached: no pyplot, no global backend state. matplotlib
    is imported here and in the drawing helpers, not by the module: a transcription that draws no
    picture (the CLI without ``--png``) does not load it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def render(
    notes: Iterable[Note],
    duration: float | None,
    title: str = "",
    path: str | Path | None = None,
    only_instrument: str | None = None,
    time_range: tuple[float, float] | None = None,
    figsize: tuple[float, float] = FIGSIZE,
    dpi: int = DPI,
) -> Figure:
    """Draw a piano roll and return the figure (also saved as PNG when ``path`` is given).

    ``duration`` is the clip length in seconds: the x axis spans ``[0, duration]`` whatever the
    notes, so rolls of the same clip line up. ``time_range`` zooms to ``(start, end)`` instead.
    ``only_instrument`` keeps the notes of one instrument (its display name, e.g. "Acoustic Guitar
    (steel)", "Drums", "Singing Voice") or of one family (e.g. "Guitar").
    """
    all_notes = list(notes)
    shown = _select(all_notes, only_instrument)
    pitched = [n for n in shown if not n.is_drum]
    drums = [n for n in shown if n.is_drum]

    if time_range is not None:
        x0, x1 = float(time_range[0]), float(time_range[1])
    else:
        end = float(duration) if duration and duration > 0 else max((n.offset for n in all_notes), default=0.0)
        x0, x1 = 0.0, max(end, 1e-3)

    fig = _figure(figsize=figsize, dpi=dpi)
    # A fixed frame rather than an automatic layout: the plotting area then sits at the same pixels
    # in every model's image (legend or not, long names or not), so time positions line up across
    # columns. The right-hand strip is reserved for the legend.
    frame = dict(left=0.085, right=0.765, top=0.9, bottom=0.13)

    if pitched and drums:
        kinds = {drum_kind(n.pitch) for n in drums}
        # The drum lane grows with the number of drum kinds, but the pitched roll stays dominant.
        gs = fig.add_gridspec(2, 1, height_ratios=[4.0, 0.4 + 0.28 * len(kinds)], hspace=0.08, **frame)
        ax = fig.add_subplot(gs[0])
        ax_drums = fig.add_subplot(gs[1], sharex=ax)
        ax.tick_params(labelbottom=False)
    elif drums:
        ax, ax_drums = None, fig.add_subplot(fig.add_gridspec(1, 1, **frame)[0])
    else:
        ax, ax_drums = fig.add_subplot(fig.add_gridspec(1, 1, **frame)[0]), None
    top = ax if ax is not None else ax_drums

    handles = []
    if ax is not None:
        handles += _draw_pitched(ax, pitched)
    if ax_drums is not None:
        handles += _draw_drums(ax_drums, drums, standalone=ax is None)

    for a in (ax, ax_drums):
        if a is not None:
            a.set_xlim(x0, x1)
            a.grid(axis="x", color="#e4e4e4", linewidth=0.6)
            a.set_axisbelow(True)
            for side in ("top", "right"):
                a.spines[side].set_visible(False)
            a.tick_params(labelsize=8)
    (ax_drums if ax_drums is not None else ax).set_xlabel("Time (s)", fontsize=8)

    if not shown:
        what = f"no {only_instrument} notes" if only_instrument else "no notes"
        top.text(0.5, 0.5, what, transform=top.transAxes, ha="center", va="center",
                 fontsize=14, color="#888888")
        top.set_yticks([])

    heading = title
    if only_instrument:
        heading = f"{title} — {only_instrument}" if title else only_instrument
    if heading:
        top.set_title(heading, loc="left", fontsize=10, fontweight="bold")
    top.set_title(f"{len(shown)} note{'' if len(shown) == 1 else 's'}", loc="right", fontsize=8, color="#666666")

    if handles:
        if len(handles) > _MAX_LEGEND:
            from matplotlib.patches import Patch

            # Keep the legend inside the figure; the rest is summarised in one line.
            extra = len(handles) - (_MAX_LEGEND - 1)
            handles = handles[:_MAX_LEGEND - 1] + [Patch(color="none", label=f"+ {extra} more")]
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(frame["right"] + 0.01, frame["top"] + 0.02),
                   fontsize=7.5 if len(handles) <= 14 else 6.5, frameon=False, handlelength=1.2,
                   borderaxespad=0.0, labelspacing=0.35)

    if path is not None:
        save_figure(fig, path)
    return fig


def _draw_pitched(ax, notes: list[Note]) -> list:
    """Notes as bars, one PolyCollection per instrument (fast even for thousands of notes)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    ax.set_ylabel("Pitch", fontsize=8)
    if not notes:
        ax.set_ylim(48, 84)
        return []
    by_inst: dict[tuple, list[Note]] = {}
    for n in notes:
        by_inst.setdefault(instrument_key(n), []).append(n)
    lo = min(n.pitch for n in notes)
    hi = max(n.pitch for n in notes)
    # At least two octaves tall so a few notes don't become giant blocks.
    pad = max(2, (24 - (hi - lo)) // 2)
    ax.set_ylim(lo - pad - 0.5, hi + pad + 0.5)
    handles = []
    for key in sorted(by_inst, key=_legend_sort_key):
        group = by_inst[key]
        _, program, label = key
        color = instrument_color(program, False, label)
        verts = []
        for n in group:
            # Keep very short notes visible: a floor of 25 ms of width.
            end = max(n.offset, n.onset + 0.025)
            verts.append([(n.onset, n.pitch - 0.42), (end, n.pitch - 0.42),
                          (end, n.pitch + 0.42), (n.onset, n.pitch + 0.42)])
        ax.add_collection(PolyCollection(verts, facecolors=color, edgecolors=_shade(color, -0.35),
                                         linewidths=0.4))
        handles.append(Patch(facecolor=color, edgecolor=_shade(color, -0.35), linewidth=0.4,
                             label=f"{instrument_name(program, False, label)} · {len(group)}"))
    # y ticks on the Cs (and Gs when zoomed in), as note names (C4 = middle C, pretty_midi's way).
    step_notes = (0,) if hi - lo + 2 * pad > 36 else (0, 7)
    ticks = [p for p in range(128) if p % 12 in step_notes and lo - pad <= p <= hi + pad]
    ax.set_yticks(ticks, [pretty_midi.note_number_to_name(p) for p in ticks])
    ax.grid(axis="y", color="#e4e4e4", linewidth=0.6)
    return handles


def _draw_drums(ax, notes: list[Note], standalone: bool) -> list:
    """Drum hits as tick marks, one row per kind of drum present."""
    from matplotlib.lines import Line2D

    kinds = sorted({drum_kind(n.pitch) for n in notes}, key=DRUM_KIND_ORDER.index)
    row = {k: i for i, k in enumerate(reversed(kinds))}  # kick at the bottom, like a score
    color = family_color(DRUMS)
    xs = [n.onset for n in notes]
    ys = [row[drum_kind(n.pitch)] for n in notes]
    ax.plot(xs, ys, linestyle="none", marker="|", markersize=9 if standalone else 7,
            markeredgewidth=1.3, color=color)
    ax.set_ylim(-0.7, len(kinds) - 0.3)
    ax.set_yticks(range(len(kinds)), list(reversed(kinds)))
    ax.tick_params(axis="y", length=0)
    ax.set_facecolor("#f6f6f6")  # a tinted lane: drums read as a separate strip, not pitches
    if standalone:
        ax.set_ylabel("Drums", fontsize=8)
    return [Line2D([], [], linestyle="none", marker="|", markersize=8, markeredgewidth=1.5,
                   color=color, label=f"{DRUMS} · {len(notes)}")]


def legend_labels(fig: Figure) -> list[str]:
    """Instrument names in a rendered figure's legend (without the note counts)."""
    return [t.get_text().rsplit(" · ", 1)[0] for leg in fig.legends for t in leg.get_texts()]


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=fig.dpi, facecolor="white")
    return path


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white")
    return buf.getvalue()


def save_png(notes: Iterable[Note], duration: float | None, path: str | Path, **kwargs) -> Path:
    """Render and write a PNG; returns the path. Keyword arguments as for :func:`render`."""
    fig = render(notes, duration, path=None, **kwargs)
    return save_figure(fig, path)


def instruments_in(notes: Iterable[Note]) -> list[str]:
    """Display names of the instruments present, in legend order (for an instrument picker)."""
    counts = Counter(instrument_key(n) for n in notes)
    return [instrument_name(p, d, lab) for d, p, lab in sorted(counts, key=_legend_sort_key)]


def agreement_heatmap(ids: Sequence[str], matrix: Sequence[Sequence[float]], title: str = "Agreement (onset F1)") -> Figure:
    """Small heatmap of :func:`mt3_demo.metrics.agreement`'s matrix, values written in the cells."""
    k = len(ids)
    side = 1.6 + 0.75 * max(k, 1)
    fig = _figure(figsize=(side + 1.2, side), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    if k == 0:
        ax.text(0.5, 0.5, "no models", ha="center", va="center", color="#888888", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    data = np.asarray(matrix, dtype=float)
    image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(k), list(ids), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), list(ids), fontsize=8)
    for i in range(k):
        for j in range(k):
            # Dark text on the bright end of viridis, white on the dark end.
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if data[i, j] > 0.6 else "white")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    return fig


# ------------------------------------------------------------------------------------------------
# Diff against a reference

DIFF_COLORS = {"matched": "#2ca02c", "extra": "#d62728", "missed": "#555555"}


def _bars(notes: Iterable[Note]) -> list:
    """Note rectangles in (time, pitch) space; drums (onsets) get the same 25 ms floor as notes."""
    verts = []
    for n in notes:
        end = max(n.offset, n.onset + 0.025)
        verts.append([(n.onset, n.pitch - 0.42), (end, n.pitch - 0.42),
                      (end, n.pitch + 0.42), (n.onset, n.pitch + 0.42)])
    return verts


def render_diff(
    est: Sequence[Note], ref: Sequence[Note], diff: dict, duration: float | None, title: str = "",
    path: str | Path | None = None, figsize: tuple[float, float] = FIGSIZE, dpi: int = DPI,
) -> Figure:
    """Draw a transcription against its reference: matched notes green, extra notes red, missed
    reference notes as grey outlines. ``diff`` is :func:`mt3_demo.metrics.note_diff`'s result for
    ``(est, ref)``; drums are drawn at their GM key like pitched notes. Saved as PNG if ``path``."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    groups = {
        "matched": [n for n, ok in zip(est, diff["est_matched"]) if ok],
        "extra": [n for n, ok in zip(est, diff["est_matched"]) if not ok],
        "missed": [n for n, ok in zip(ref, diff["ref_matched"]) if not ok],
    }
    end = float(duration) if duration and duration > 0 else max(
        (n.offset for n in list(est) + list(ref)), default=0.0)
    fig = _figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot(fig.add_gridspec(1, 1, left=0.085, right=0.765, top=0.9, bottom=0.13)[0])
    handles = []
    for kind in ("missed", "extra", "matched"):  # outlines first, so filled notes stay on top
        color, notes = DIFF_COLORS[kind], groups[kind]
        filled = kind != "missed"
        ax.add_collection(PolyCollection(_bars(notes), facecolors=color if filled else "none",
                                         edgecolors=_shade(color, -0.35) if filled else color,
                                         linewidths=0.4 if filled else 0.9))
        handles.append(Patch(facecolor=color if filled else "none", edgecolor=color,
                             label=f"{kind} · {len(notes)}"))
    pitches = [n.pitch for n in list(est) + list(ref)]
    lo, hi = (min(pitches), max(pitches)) if pitches else (60, 60)
    pad = max(2, (24 - (hi - lo)) // 2)
    ax.set_xlim(0.0, max(end, 1e-3))
    ax.set_ylim(lo - pad - 0.5, hi + pad + 0.5)
    ticks = [p for p in range(128) if p % 12 == 0 and lo - pad <= p <= hi + pad]
    ax.set_yticks(ticks, [pretty_midi.note_number_to_name(p) for p in ticks])
    ax.grid(color="#e4e4e4", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("Time (s)", fontsize=8)
    ax.set_ylabel("Pitch", fontsize=8)
    heading = f"{title} — diff ({diff['mode']})" if title else f"diff ({diff['mode']})"
    ax.set_title(heading, loc="left", fontsize=10, fontweight="bold")
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.775, 0.92), fontsize=7.5,
               frameon=False, handlelength=1.2)
    if path is not None:
        save_figure(fig, path)
    return fig
