"""The aggregates of an evaluation: ``table.md``, ``table.csv`` and ``f1.png``.

Mean over tracks, as the MT3, MR-MT3 and YourMT3 papers report (each track weighs the same,
however many notes it has), with the population standard deviation and n, per model and metric.
Drum scores count only the tracks whose reference has drums (elsewhere "no drums found in no drums"
scores 1.0 and would flatter every model); per-family F1 counts the tracks whose reference plays
that family. Failed tracks are counted, never averaged in.

Reproducible: lines are sorted by (track, model) before anything is summed, sums are exact
(``math.fsum``), numbers are written with fixed formats, and none of these files holds a date
(that is in ``summary.json``). The same lines give the same bytes.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable, Iterable

# (metric key, label in table.md, value of a line or None when the line does not count for it)
Getter = Callable[[dict], "float | None"]


def _score(name: str, part: str) -> Getter:
    return lambda line: line["scores"][name][part]


def _drums(part: str) -> Getter:
    return lambda line: line["scores"]["drums"][part] if line["scores"]["counts"]["ref_drums"] else None


def _instruments(*path: str) -> Getter:
    def get(line: dict) -> float | None:
        value: Any = line.get("instruments", {})
        for key in path:
            value = value[key]
        return float(len(value)) if isinstance(value, list) else float(value)
    return get


METRICS: list[tuple[str, str, Getter]] = [
    ("onset_f1", "Onset F1", _score("onset", "f1")),
    ("onset_precision", "Onset precision", _score("onset", "precision")),
    ("onset_recall", "Onset recall", _score("onset", "recall")),
    ("onset_offset_f1", "Onset+offset F1", _score("onset_offset", "f1")),
    ("program_aware_f1", "Multi-instrument F1 (program-aware)", _score("program_aware", "f1")),
    ("drums_f1", "Drum F1 (tracks with drums)", _drums("f1")),
    ("instrument_detection_f1", "Instrument detection F1", _instruments("detection", "f1")),
    ("instrument_family_f1", "Instrument family detection F1", _instruments("family_detection", "f1")),
    ("instruments_leaked", "Instruments leaked (count)", _instruments("leaked")),
    ("instruments_missed", "Instruments missed (count)", _instruments("missed")),
]
PLOTTED = [("onset_f1", "Onset F1"), ("onset_offset_f1", "Onset+offset F1"),
           ("program_aware_f1", "Multi-instrument F1")]


def sorted_lines(lines: Iterable[dict]) -> list[dict]:
    return sorted(lines, key=lambda line: (line["track"], line["model"]))


def stats(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std", "n"}``: exact sums, population standard deviation; None when n is 0."""
    n = len(values)
    if not n:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(values) / n
    return {"mean": mean, "std": math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n), "n": n}


def aggregate(lines: Iterable[dict], model_ids: list[str]) -> dict[str, Any]:
    """Per model: ``metrics`` (key → stats), ``families`` (family → stats of its F1), ``tracks``,
    ``failed``, ``weights`` (which weights ran: "official", "test: mt3.pth", ...). ``lines``: the
    result lines to count (one per (track, model))."""
    lines = sorted_lines(lines)
    out: dict[str, Any] = {}
    for model_id in model_ids:
        mine = [line for line in lines if line["model"] == model_id]
        ok = [line for line in mine if "error" not in line]
        metrics = {}
        for key, _, get in METRICS:
            metrics[key] = stats([v for v in (get(line) for line in ok) if v is not None])
        families: dict[str, list[float]] = {}
        for line in ok:
            for family, score in line.get("families", {}).items():
                families.setdefault(family, []).append(score["f1"])
        weights = sorted({line.get("weights") or "?" for line in ok})
        out[model_id] = {"tracks": len(mine), "failed": len(mine) - len(ok), "metrics": metrics,
                         "weights": ", ".join(weights) if weights else "—",
                         "families": {f: stats(v) for f, v in sorted(families.items())}}
    return out


def _cell(s: dict[str, Any]) -> str:
    return "—" if s["n"] == 0 else f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})"


def table_markdown(agg: dict[str, Any], heading: str) -> str:
    models = list(agg)
    head = "| metric | " + " | ".join(models) + " |\n|---|" + "---|" * len(models) + "\n"
    rows = ["| Weights | " + " | ".join(agg[m]["weights"] for m in models) + " |"]  # first: what ran
    rows += [f"| {label} | " + " | ".join(_cell(agg[m]["metrics"][key]) for m in models) + " |"
             for key, label, _ in METRICS]
    rows.append("| Tracks evaluated / failed | " + " | ".join(
        f"{agg[m]['tracks'] - agg[m]['failed']} / {agg[m]['failed']}" for m in models) + " |")
    text = f"# {heading}\n\nMean ± standard deviation over tracks (n tracks), mir_eval with 50 ms onset tolerance.\n\n"
    text += head + "\n".join(rows) + "\n"
    families = sorted({f for m in models for f in agg[m]["families"]})
    if families:
        text += ("\n## F1 per instrument family\n\nProgram-aware onset+offset F1 (drums onset only) of the "
                 "notes of each General MIDI family the reference plays, over the tracks where it plays.\n\n")
        text += "| family | " + " | ".join(models) + " |\n|---|" + "---|" * len(models) + "\n"
        empty = {"n": 0}
        text += "\n".join(f"| {f} | " + " | ".join(_cell(agg[m]["families"].get(f, empty)) for m in models) + " |"
                          for f in families) + "\n"
    return text


def table_csv(agg: dict[str, Any]) -> str:
    """Long format: ``model,metric,mean,std,n`` (``family_f1:<family>`` for families,
    ``tracks_failed`` with the count as its mean). Full float precision (``repr``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "metric", "mean", "std", "n"])
    for model_id, a in agg.items():
        rows = [(key, a["metrics"][key]) for key, _, _ in METRICS]
        rows += [(f"family_f1:{f}", s) for f, s in a["families"].items()]
        for key, s in rows:
            writer.writerow([model_id, key, "" if s["mean"] is None else repr(s["mean"]),
                             "" if s["std"] is None else repr(s["std"]), s["n"]])
        writer.writerow([model_id, "tracks_failed", a["failed"], "", a["tracks"]])
    return buf.getvalue()


def f1_figure(lines: Iterable[dict], model_ids: list[str]):
    """Each model's per-track F1 (onset, onset+offset, multi-instrument) as box plots with every
    track drawn as a dot (deterministic jitter: the dots of one track line up across panels)."""
    import numpy as np
    from matplotlib.figure import Figure

    lines = sorted_lines(line for line in lines if "error" not in line)
    getters = {key: get for key, _, get in METRICS}
    fig = Figure(figsize=(3.2 * len(PLOTTED) + 0.6, 3.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(PLOTTED), sharey=True)
    tracks = sorted({line["track"] for line in lines})
    jitter = {t: (i / max(len(tracks) - 1, 1) - 0.5) * 0.3 for i, t in enumerate(tracks)}
    for ax, (key, title) in zip(axes, PLOTTED):
        data = [[getters[key](line) for line in lines if line["model"] == m] for m in model_ids]
        positions = np.arange(1, len(model_ids) + 1)
        if any(data):
            ax.boxplot([d if d else [np.nan] for d in data], positions=positions, widths=0.5,
                       showfliers=False, medianprops={"color": "#4338ca"})
        for pos, m in zip(positions, model_ids):
            mine = [line for line in lines if line["model"] == m]
            ax.scatter([pos + jitter[line["track"]] for line in mine], [getters[key](line) for line in mine],
                       s=10, color="#111827", alpha=0.6, zorder=3)
        ax.set_xticks(positions, model_ids, rotation=20, fontsize=8)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("per-track F1")
    return fig


def write_tables(out: Path, lines: Iterable[dict], model_ids: list[str], heading: str) -> dict[str, Any]:
    """``table.md``, ``table.csv`` and ``f1.png`` in ``out``; returns the aggregate."""
    lines = sorted_lines(lines)
    agg = aggregate(lines, model_ids)
    (out / "table.md").write_text(table_markdown(agg, heading), encoding="utf-8")
    (out / "table.csv").write_text(table_csv(agg), encoding="utf-8")
    # No "Software" entry: the PNG's bytes do not depend on the matplotlib version (Agg writes no date).
    f1_figure(lines, model_ids).savefig(out / "f1.png", format="png", facecolor="white",
                                        metadata={"Software": None})
    return agg
