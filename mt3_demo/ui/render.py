"""HTML for the page: header, availability, card heads, stat tiles, score and agreement tables.

Pure functions from the package's objects (``Run``, ``ModelResult``, the manager's registry) to
HTML strings; no Gradio here, nothing recomputed (a transcription's stats come with it).
"""
from __future__ import annotations

import html
import re
from typing import Any

from .. import metrics, pianoroll, writers
from ..instruments import instrument_key, instrument_name
from ..availability import Availability
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
# One line for each word a visitor may not know (hover titles, and the "what do these mean" fold).
GLOSSARY = {
    "RTF": "real-time factor: seconds of computing per second of audio (below 1 is faster than real time)",
    "trim": "how the notes still sounding at a segment's end are closed (the model's own rule)",
    "segments without EOS": "2-second segments whose output hit the token limit before the model "
                            "said it was done; notes there may be cut short",
    "memory N": "how many tokens of the previous segment MR-MT3 remembers",
    "compat": "which implementation's numeric conventions the MT3 run follows",
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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def model_choices(manager: ModelManager, avail: dict[str, Availability],
                  selected: list[str] | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """(choices, value) of the model checkboxes: only models that can run here, labelled; the
    still-usable part of ``selected``, else the default selection."""
    usable = [m for m in manager.model_ids() if avail[m].usable]
    value = ([m for m in (selected or []) if m in usable]
             or [m for m in manager.default_selection(avail) if m in usable])
    return [(choice_label(manager, m, avail[m]), m) for m in usable], value


def choice_label(manager: ModelManager, model_id: str, avail: Availability) -> str:
    """Checkbox label of a model that can run here: its name and which weights, or the download."""
    spec = manager.spec(model_id)
    if avail.status == "download":
        size = f", ~{avail.download_mb:.0f} MB" if avail.download_mb else ""
        return f"{spec.display_name} — downloads on first use{size}"
    return f"{spec.display_name} — {avail.weights or AVAIL_TEXT.get(avail.status, avail.status)}"


def _unavailable_item(title_html: str, why: str, details: str, model_id: str | None = None) -> str:
    """One line of the "not available here" list: name, badge, why; the details folded."""
    data = f' data-model="{esc(model_id)}"' if model_id else ""
    folded = f'<details><summary>details</summary>{esc(details)}</details>' if details else ""
    return (f'<li{data}>{title_html} {badge("unavailable", "unavailable")} '
            f'<span class="why">{esc(why)}</span>{folded}</li>')


def availability_html(manager: ModelManager, avail: dict[str, Availability]) -> str:
    """The models that cannot run here (they are not offered): why, in one line; the fix folded.
    ``avail``: the page's snapshot (``manager.availabilities()``)."""
    lines = []
    for model_id in manager.model_ids():
        if not avail[model_id].usable:
            why, fix = avail[model_id].reason, avail[model_id].fix
            lines.append(_unavailable_item(f"<b>{esc(manager.spec(model_id).display_name)}</b>", why,
                                           f"To fix: {fix}" if fix else "", model_id))
    for module, error in manager.import_errors.items():
        lines.append(_unavailable_item(f"<code>{esc(module)}</code>", "its code could not be imported.", error))
    if not lines:
        return ""
    return f'<div class="availability"><p>Not available here:</p><ul>{"".join(lines)}</ul></div>'


def upload_hint(max_seconds: float) -> str:
    return f'<div class="upload-note hint">WAV, FLAC, OGG or MP3, up to {max_seconds / 60:.0f} min.</div>'


def upload_note(ok: bool, text: str) -> str:
    """The line under the recording right after an upload: what it is, or what is wrong with it."""
    if ok:
        return f'<div class="upload-note ok">✓ Ready: {esc(text)}.</div>'
    return f'<div class="upload-note bad" role="alert">✗ {esc(text)}</div>'


def header_html(manager: ModelManager, snapshot: dict[str, Availability]) -> str:
    """Title, one line, and one line per model (name, state, weights); its description, licence
    and paper behind a click. Test weights in use: said in a banner, before anything else."""
    lines = []
    for model_id in manager.model_ids():
        spec, avail = manager.spec(model_id), snapshot[model_id]
        paper = (f' · <a href="{esc(spec.paper_url)}" target="_blank" rel="noopener">paper</a>'
                 if spec.paper_url else "")
        weights = f'<span class="meta">{esc(avail.weights)}</span><br>' if avail.weights else ""
        lines.append(
            f'<details class="mt3-model" data-model="{esc(model_id)}"><summary><span class="name">'
            f'{esc(spec.display_name)}</span>{badge(avail.status, AVAIL_TEXT.get(avail.status, avail.status))}'
            f'</summary>{weights}{esc(spec.description)}<br>'
            f'<span class="meta">{esc(spec.instruments)} · licence: {esc(spec.licence)}{paper}</span></details>')
    test = [manager.spec(m).display_name for m in manager.model_ids()
            if snapshot[m].usable and snapshot[m].weights.startswith("test weights")]
    # On a phone the names give way (the model list shows which): the banner stays one short line.
    banner = (f'<p class="test-banner" role="note"><b>Test weights</b><span class="wide-only">: '
              f'{esc(", ".join(test))} {"runs" if len(test) == 1 else "run"} tiny untrained checkpoints here; '
              f'their notes are noise.</span><span class="phone-only"> ({plural(len(test), "model")}): '
              'untrained, their notes are noise.</span></p>' if test else "")
    return (
        '<div class="mt3-header"><h1>MT3 family — side-by-side music transcription</h1>'
        '<p class="tagline">Every selected model writes down the notes it hears<span class="wide-only">: compare '
        'their piano rolls, listen, download the MIDI, score them against a reference</span>. Everything runs '
        f'on this server.</p>{banner}'
        f'<div class="mt3-models">{"".join(lines)}</div></div>')


def about_models_html(manager: ModelManager, avail: dict[str, Availability]) -> str:
    """The header's model lines, for the foot of the page on phones (the header hides them)."""
    html_ = header_html(manager, avail)
    return html_[html_.index('<div class="mt3-models">'):-len("</div>")]


# ------------------------------------------------------------------------------------------------
# The status line at the top of the results


def status_html(kind: str, title: str, text: str = "", extra: str = "") -> str:
    """The status line: a bold title, one sentence, and what else the state needs (a bar, notes)."""
    return f'<div class="status {esc(kind)}"><p><b>{esc(title)}</b> {esc(text)}</p>{extra}</div>'


def idle_status(manager: ModelManager, avail: dict[str, Availability]) -> str:
    """The status before a run; when no model can run here (``avail``), says so and why instead."""
    blocked = nothing_runs(manager, avail)
    if blocked is not None:
        why, fix = blocked
        extra = f'<p class="fix">To fix: {esc(fix)}</p>' if fix else ""
        return status_html("error", "No model can run here right now.", why, extra)
    return status_html("idle", "Pick an example or upload a recording,",
                       "then press Transcribe: the progress and the piano rolls appear here.")


def nothing_runs(manager: ModelManager, avail: dict[str, Availability]) -> tuple[str, str] | None:
    """(why, fix) when no model can run here, else None. One shared reason (a Ray cluster that cannot
    be reached, no network for every download) is said once; different reasons point at the list."""
    ids = manager.model_ids()
    if any(avail[m].usable for m in ids):
        return None
    reasons = {(avail[m].reason or "", avail[m].fix or "") for m in ids}
    if len(reasons) == 1:
        return next(iter(reasons))
    return "Each model says why in the list under the inputs (“Not available here”).", ""


def run_button(manager: ModelManager, avail: dict[str, Availability]) -> dict[str, Any]:
    """Transcribe's label and state: a page where no model can run offers nothing to press."""
    if nothing_runs(manager, avail) is None:
        return dict(value="Transcribe", interactive=True)
    return dict(value="No model can run here", interactive=False)


def _warnings_html(warnings: list[str], test_warning: str = "") -> str:
    lines = [f'<p class="test-banner">{esc(test_warning)}</p>'] if test_warning else []
    return "".join(lines + [f'<p class="warn-line">Note: {esc(w)}</p>' for w in warnings])


def running_status(duration: float, names: list[str], index: int, fraction: float, phase: str,
                   warnings: list[str]) -> str:
    """Which model runs now and its phase, over a bar for the whole run (models one after another)."""
    n = len(names)
    overall = (index + min(max(fraction, 0.0), 1.0)) / max(n, 1)
    phase = phase[:1].upper() + phase[1:]
    now = (f'<p class="phase" data-phase="{esc(phase)}">{esc(names[index])}'
           f'{f" ({index + 1} of {n})" if n > 1 else ""}: {esc(phase)}{"" if "·" in phase else "…"}</p>')
    bar = f'<div class="bar"><span style="width:{100 * overall:.0f}%"></span></div>'
    return status_html("running", "Transcribing", f"{duration:.1f} s of audio with {plural(n, 'model')}"
                       f"{', one after another' if n > 1 else ''}.", now + bar + _warnings_html(warnings))


def done_status(run: Run, warnings: list[str]) -> str:
    ok, total = len(run.ok_results), len(run.results)
    test = writers.test_weights_warning(run.results)
    if not ok:
        cards = "the card" if total == 1 else "the cards"
        return status_html("error", "Nothing transcribed:",
                           f"{'the model could not run' if total == 1 else 'no model could run'} (see {cards}).",
                           _warnings_html(warnings))
    text = f"{ok} of {plural(total, 'model')} transcribed {run.clip.duration:.1f} s of audio."
    failed = total - ok
    if failed:
        text += f" {failed} failed (see the card{'s' if failed > 1 else ''})."
    return status_html("done", "Done:", text + " Press ▶ to listen; the source menu switches tracks.",
                       _warnings_html(warnings, test))


def stopped_status(run: Run | None, unfinished: list[str]) -> str:
    """Stopped: what had finished is shown (``run``), what had not is named."""
    rest = f" Not finished: {', '.join(unfinished)}." if unfinished else ""
    if run is None:
        return status_html("stopped", "Stopped.", f"No model had finished.{rest} Press Transcribe to start again.")
    done = ", ".join(r.display_name for r in run.ok_results)
    return status_html("stopped", "Stopped.", f"Finished before the stop: {done}; their results are below.{rest}",
                       _warnings_html([], writers.test_weights_warning(run.results)))


# ------------------------------------------------------------------------------------------------
# One model's card


def _sentence_and_details(message: str) -> tuple[str, str]:
    """A failed model's message as the card shows it: its first sentence, the rest behind
    "details" (a result's error is stored as one string: results.json keeps it so)."""
    head, _, more = message.strip().partition(" To fix: ")
    if not more and ". " in head:
        head, _, more = head.partition(". ")
    head = head.rstrip(". ")
    head += "" if head.endswith(("?", "!")) else "."
    return head[:1].upper() + head[1:], more.strip()


def weights_text(weights: str) -> str:
    """A result's weights (``Provenance.short``) in words."""
    kind, _, file = weights.partition(": ")
    if kind == "test":
        return f"test weights: {file} (untrained)"
    if kind == "yours":
        return f"your checkpoint: {file}"
    return weights.replace("official", "official weights", 1) if weights.startswith("official") else weights


def weights_badge(weights: str) -> str:
    if not weights:
        return ""
    kind = "weights-test" if weights.startswith("test:") else "weights"
    return badge(kind, weights_text(weights))


def card_head(name: str, state: str, detail: str = "", progress: tuple[float, str] | None = None,
              weights: str = "") -> str:
    """The card's title, state and (done) which weights ran. Running: a bar and the phase (with
    time left); failed: one sentence, the rest behind "details"."""
    kind, text = {"queued": ("queued", "waiting"), "running": ("running", "transcribing…"),
                  "done": ("done", "done"), "error": ("error", "failed"),
                  "stopped": ("queued", "stopped")}[state]
    head = f"<h3>{esc(name)} {badge(kind, text)}{weights_badge(weights)}</h3>"
    if weights.startswith("test:"):
        head += '<p class="test-banner">Tiny untrained test checkpoint: these notes are noise.</p>'
    if state == "error":
        sentence, more = _sentence_and_details(re.sub(r"^[a-z0-9_]+: ", "", detail))  # no "model_id: " here
        fold = f"<details><summary>details</summary>{esc(more)}</details>" if more else ""
        return f'{head}<p class="card-error">{esc(sentence)}</p>{fold}'
    if state == "running":
        fraction, phase = progress if progress is not None else (0.0, "starting")
        return (f'{head}<div class="card-progress" data-phase="{esc(phase)}">'
                f'<div class="bar"><span style="width:{100 * fraction:.0f}%"></span></div>'
                f'<p class="phase">{esc(phase[:1].upper() + phase[1:])}{"" if "·" in phase else "…"}</p></div>')
    return head + (f"<p>{esc(detail)}</p>" if detail else "")


def done_detail(result: ModelResult) -> str:
    t = result.transcription
    notes = plural(t.stats["total"], "note") if t.stats["total"] else "no notes"
    return f"{notes} · RTF {t.rtf:.2f} on {t.device}"


def notes_after_end(result: ModelResult) -> int:
    """Notes that start after the recording ends (MT3 and MR-MT3 decode the last segment without a
    time limit, as upstream does): kept in the MIDI, but beyond the rolls' time axis."""
    t = result.transcription
    return sum(1 for n in t.notes if n.onset >= t.audio_seconds) if t is not None else 0


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
    grid = "".join(f'<div class="stat"{_title(k)}><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div></div>'
                   for k, v in tiles)
    facts = [(label, t.info[key]) for key, label in INFO_LABELS.items()
             if isinstance(t.info.get(key), (str, int, float)) and not isinstance(t.info.get(key), bool)]
    spans = [f"<span{_title(k)}>{esc(k)}: {esc(v)}</span>" for k, v in facts]
    info = f'<div class="info-line">{" · ".join(spans)}</div>' if facts else ""
    words = ["RTF"] + [k for k, _ in facts if k in GLOSSARY]
    glossary = ('<details class="glossary"><summary>What do these mean?</summary><ul>'
                + "".join(f"<li><b>{esc(w)}</b>: {esc(GLOSSARY[w])}</li>" for w in words) + "</ul></details>")
    late = notes_after_end(result)
    after = (f'<div class="warn-line" data-after-end="{late}">{plural(late, "note")} start'
             f'{"s" if late == 1 else ""} after the end of the recording (kept in the MIDI; beyond the '
             "rolls' time axis).</div>" if late else "")
    return f'<div class="stat-grid">{grid}</div>{_instrument_list(t.notes)}{after}{info}{glossary}'


def _title(word: str) -> str:
    """A hover explanation for a word of the glossary (nothing for plain words)."""
    return f' title="{esc(GLOSSARY[word])}"' if word in GLOSSARY else ""


def _instrument_list(notes: list[Note]) -> str:
    """Each instrument's colour swatch (as in the piano roll's legend) and note count, most first."""
    counts: dict[tuple, int] = {}
    for n in notes:
        counts[instrument_key(n)] = counts.get(instrument_key(n), 0) + 1
    if not counts:
        return ('<div class="no-notes">No notes: this model wrote nothing for this recording (is it a '
                'kind of music the model was trained on?). No MIDI or stems to download.</div>')
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
    head = "".join(f"<th{_title(h)}>{esc(h)}</th>" for h in headers)
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
    rows = [[model_cell(r)] + [f"{v:.3f}" if v == v else "—" for v in vals] for r, vals in zip(scored, values)]
    group_row = '<tr><th></th>' + "".join(f'<th class="group" colspan="3">{esc(label)}</th>'
                                         for _, label in groups) + "</tr>"
    headers = ["Model"] + [p for _ in groups for _, p in PRF]
    return table_html(headers, rows, _best_cells(values), group_row) + note(
        'mir_eval note metrics against <b>' + esc(run.reference_name or "the reference") + '</b>: onset '
        'within 50 ms and the same pitch; "onset + offset" also needs the offset within 20 % of the '
        'note length (min 50 ms); "program-aware" also needs the right instrument family (drums: '
        'onset only).')


def model_cell(result: ModelResult) -> str:
    """A model's name in the comparison tables, with which weights ran (test weights cannot pass
    for the model's own)."""
    t = result.transcription
    return f"{result.display_name} · {weights_text(t.weights)}" if t is not None and t.weights else result.display_name


def _best_cells(values: list[list[float]]) -> set[tuple[int, int]]:
    """(row, column) of each column's best value — only where it beats another model's (a column
    of ties, e.g. all 0.000, has no best; nor has a single model)."""
    best: set[tuple[int, int]] = set()
    for j in range(len(values[0]) if values else 0):
        col = [r[j] for r in values if r[j] == r[j]]
        if len(col) > 1 and max(col) > min(col):
            best |= {(i, j + 1) for i, r in enumerate(values) if r[j] == max(col)}
    return best


def summary_html(run: Run) -> str:
    """One row per model (writers.SUMMARY_COLUMNS), as a table that scrolls inside itself; a
    failed model's row points to its card, where the reason is."""
    rows = []
    for r in run.results:
        row = writers.summary_row(r)
        if r.ok:
            row["weights"] = weights_text(row["weights"])
        else:
            row = {"model": r.display_name, "status": "failed (see its card)"}
        rows.append([_cell(row.get(k)) if k in row else "" for k, _ in writers.SUMMARY_COLUMNS])
    return table_html([h for _, h in writers.SUMMARY_COLUMNS], rows)


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
