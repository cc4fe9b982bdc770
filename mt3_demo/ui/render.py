"""HTML for the page: header, availability, card heads, stat tiles, score and agreement tables.

Pure functions from the package's objects (``Run``, ``ModelResult``, the manager's registry) to
HTML strings; no Gradio here, nothing recomputed (a transcription's stats come with it).
"""
from __future__ import annotations

import html
from typing import Any

from .. import metrics, pianoroll
from ..instruments import instrument_key, instrument_name
from ..manager import ModelManager
from ..notes import Note
from ..results import ModelResult, Run

AVAIL_TEXT = {"ready": "ready", "download": "downloads on first use", "unavailable": "unavailable"}

# Model-specific facts that say *what ran*, shown on a card; diagnostics stay in results.json.
INFO_LABELS = {
    "compat": "compat", "frontend": "frontend", "memory_length": "memory N", "checkpoint": "checkpoint",
    "variant": "variant", "trim": "trim", "segments": "segments", "segments_without_eos": "segments without EOS",
    "max_tokens": "max tokens", "segment_s": "segment s", "hop_s": "hop s",
}
SCORE_GROUPS = [("onset", "Onset"), ("onset_offset", "Onset + offset"), ("program_aware", "Program-aware")]
PRF = [("precision", "P"), ("recall", "R"), ("f1", "F1")]
BREAKDOWN_COLUMNS = [("instrument", "Instrument"), ("family", "Family"), ("notes", "Notes"),
                     ("pitch_range", "Range / drum kinds"), ("first_onset", "First onset s"),
                     ("last_onset", "Last onset s")]


def esc(x: Any) -> str:
    return html.escape(str(x))


def badge(kind: str, text: str) -> str:
    return f'<span class="badge {kind}">{esc(text)}</span>'


def note(text_html: str) -> str:
    return f'<div class="note">{text_html}</div>'


# ------------------------------------------------------------------------------------------------
# Models: checkbox labels, why not ready, the header cards


def choice_label(manager: ModelManager, model_id: str) -> str:
    """Checkbox label: the model's name and whether it can run here (the reason is shown below)."""
    spec = manager.spec(model_id)
    avail = manager.availability(model_id)
    text = AVAIL_TEXT.get(avail.status, avail.status)
    if avail.status == "download":
        text += f", ~{spec.size_mb:.0f} MB"
    return f"{spec.display_name} — {text}"


def availability_html(manager: ModelManager) -> str:
    """Why each not-ready model is not ready, and how to fix it (verbatim from the manager)."""
    lines = []
    for model_id in manager.model_ids():
        avail = manager.availability(model_id)
        if avail.status != "ready":
            name = manager.spec(model_id).display_name
            lines.append(f"<li><b>{esc(name)}</b> ({esc(AVAIL_TEXT.get(avail.status, avail.status))}): "
                         f"{esc(avail.reason)}</li>")
    for module, error in manager.import_errors.items():
        lines.append(f"<li><code>{esc(module)}</code> could not be loaded: {esc(error)}</li>")
    if not lines:
        return '<div class="availability">All models are ready on this machine.</div>'
    return f'<div class="availability"><ul>{"".join(lines)}</ul></div>'


def header_html(manager: ModelManager) -> str:
    cards = []
    for model_id in manager.model_ids():
        spec = manager.spec(model_id)
        avail = manager.availability(model_id)
        paper = (f' · <a href="{esc(spec.paper_url)}" target="_blank" rel="noopener">paper</a>'
                 if spec.paper_url else "")
        cards.append(
            f'<div class="mt3-model"><span class="name">{esc(spec.display_name)}</span>'
            f'{badge(avail.status, AVAIL_TEXT.get(avail.status, avail.status))}<br>'
            f'{esc(spec.description)}<br>'
            f'<span class="meta">{esc(spec.instruments)} · licence: {esc(spec.licence)}{paper}</span></div>')
    return (
        '<div class="mt3-header"><h1>MT3 family — side-by-side music transcription</h1>'
        '<p class="tagline">Give it a recording; every selected model writes down the notes it hears. '
        'Compare their piano rolls, listen to them next to the original, download the MIDI, and '
        'score them against a reference when you have one. Everything runs on this server; nothing '
        'is sent elsewhere.</p>'
        f'<div class="mt3-models">{"".join(cards)}</div></div>')


# ------------------------------------------------------------------------------------------------
# One model's card


def card_head(name: str, state: str, detail: str = "") -> str:
    kind = {"queued": "queued", "running": "running", "done": "done", "error": "error"}[state]
    text = {"queued": "waiting", "running": "transcribing…", "done": "done", "error": "failed"}[state]
    extra = f'<p class="card-error">{esc(detail)}</p>' if state == "error" else (
        f"<p>{esc(detail)}</p>" if detail else "")
    return f"<h3>{esc(name)} {badge(kind, text)}</h3>{extra}"


def stats_html(result: ModelResult) -> str:
    """Stat tiles (note counts, pitch range, timings, device), per-instrument counts with the piano
    roll's colours, and the model-specific facts of what ran."""
    t = result.transcription
    if t is None:
        return ""
    s = t.stats
    tiles = [
        ("Notes", s["total"]), ("Pitched", s["pitched"]), ("Drum", s["drum"]),
        ("Instruments", s["instruments"]), ("Pitch range", metrics.pitch_range_name(s["pitch_range"] or [])),
        ("Load", f"{t.load_seconds:.1f} s"), ("Inference", f"{t.inference_seconds:.1f} s"),
        ("RTF", f"{t.rtf:.2f}"), ("Device", f"{t.device} · {t.dtype}"),
    ]
    grid = "".join(f'<div class="stat"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div></div>'
                   for k, v in tiles)
    facts = [f"{label}: {esc(t.info[key])}" for key, label in INFO_LABELS.items()
             if isinstance(t.info.get(key), (str, int, float)) and not isinstance(t.info.get(key), bool)]
    info = f'<div class="info-line">{" · ".join(facts)}</div>' if facts else ""
    return f'<div class="stat-grid">{grid}</div>{_instrument_list(t.notes)}{info}'


def _instrument_list(notes: list[Note]) -> str:
    """Each instrument's colour swatch (as in the piano roll's legend) and note count, most first."""
    counts: dict[tuple, int] = {}
    for n in notes:
        counts[instrument_key(n)] = counts.get(instrument_key(n), 0) + 1
    if not counts:
        return ('<div class="info-line">No notes found (is this a kind of music the model was '
                'trained on?)</div>')
    items = []
    for (is_drum, program, label), count in sorted(counts.items(), key=lambda kv: -kv[1]):
        color = pianoroll.instrument_color(program, is_drum, label)
        items.append(f'<span class="inst-item"><span class="swatch" style="background:{color}"></span>'
                     f'{esc(instrument_name(program, is_drum, label))} <b>{count}</b></span>')
    return f'<div class="inst-list">{"".join(items)}</div>'


def breakdown_html(notes: list[Note]) -> str:
    """Per-instrument table (name, family, notes, pitch range, first/last onset)."""
    rows = metrics.instrument_breakdown(notes)
    if not rows:
        return note("No notes.")
    return table_html([label for _, label in BREAKDOWN_COLUMNS],
                      [[_cell(r.get(key)) for key, _ in BREAKDOWN_COLUMNS] for r in rows])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return "—" if v is None else str(v)


# ------------------------------------------------------------------------------------------------
# Across models


def table_html(headers: list[str], rows: list[list[Any]], best: set[tuple[int, int]] = frozenset(),
               group_row: str = "", classes: str = "mt3-table") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="best">{esc(v)}</td>' if (i, j) in best else f"<td>{esc(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="mt3-table-wrap"><table class="{classes}"><thead>{group_row}<tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


def scores_html(run: Run) -> str:
    """One row per model, P/R/F1 for each metric; the best value of each column highlighted."""
    if not run.scores:
        return note("No reference: click an example (they carry their ground-truth MIDI) or upload "
                    "a reference MIDI to score the models.")
    scored = [r for r in run.ok_results if r.model_id in run.scores]
    groups = list(SCORE_GROUPS)
    if any(run.scores[r.model_id].get("counts", {}).get("ref_drums") for r in scored):
        groups.append(("drums", "Drums (onset)"))
    values = [[float(run.scores[r.model_id].get(g, {}).get(k, float("nan"))) for g, _ in groups for k, _ in PRF]
              for r in scored]
    rows = [[r.display_name] + [f"{v:.3f}" if v == v else "—" for v in vals] for r, vals in zip(scored, values)]
    group_row = '<tr><th></th>' + "".join(f'<th class="group" colspan="3">{esc(label)}</th>'
                                         for _, label in groups) + "</tr>"
    headers = ["Model"] + [p for _ in groups for _, p in PRF]
    return table_html(headers, rows, _best_cells(values), group_row) + note(
        'mir_eval note metrics against <b>' + esc(run.reference_name or "the reference") + '</b>: onset '
        'within 50 ms and the same pitch; "onset + offset" also needs the offset within 20 % of the '
        'note length (min 50 ms); "program-aware" also needs the right instrument family (drums: '
        'onset only).')


def _best_cells(values: list[list[float]]) -> set[tuple[int, int]]:
    """(row, column) of each column's best value; none with one model (everything would be best)."""
    best: set[tuple[int, int]] = set()
    if len(values) > 1:
        for j in range(len(values[0])):
            col = [r[j] for r in values if r[j] == r[j]]
            if col:
                best |= {(i, j + 1) for i, r in enumerate(values) if r[j] == max(col)}
    return best


def agreement_html(run: Run) -> str:
    """Pairwise onset F1 between models as a shaded table (a heatmap that also reads on a phone)."""
    if len(run.agreement_ids) < 2:
        return note("Select two or more models to see how much they agree.")
    names = [run.result(m).display_name for m in run.agreement_ids]
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    body = []
    for name, row in zip(names, run.agreement):
        # Indigo with opacity = agreement; white text once the cell gets dark.
        cells = "".join(f'<td style="background:rgba(79,70,229,{0.08 + 0.85 * v:.2f});'
                        f'color:{"#ffffff" if v > 0.55 else "inherit"}">{v:.2f}</td>' for v in row)
        body.append(f"<tr><th>{esc(name)}</th>{cells}</tr>")
    return (f'<div class="mt3-table-wrap"><table class="mt3-table heatmap"><thead><tr><th></th>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            + note("Onset F1 of each model against each other model (1 = they wrote the same notes, "
                   "0 = nothing in common). Symmetric; the diagonal is 1."))


def done_message(run: Run) -> str:
    ok, total = len(run.ok_results), len(run.results)
    msg = f"**Done:** {ok} of {total} model{'s' if total > 1 else ''} transcribed {run.clip.duration:.1f} s of audio."
    failed = total - ok
    if failed:
        msg += f" {failed} failed (see the card{'s' if failed > 1 else ''})."
    return msg
