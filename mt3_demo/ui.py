"""The Gradio Blocks app: one recording in, every selected model's transcription side by side.

This is the only module that imports gradio. It arranges components and calls the package
(``audio.load_clip``, ``compare.run``, ``metrics``, ``synth``, ``pianoroll``); it holds no model or
file-format logic of its own beyond zipping a run's report.

Two ways in:

* the page: upload / record / click an example, tick models, press *Transcribe*; a generator
  handler fills one card per model as soon as that model finishes, then the cross-model tables;
* the API endpoint ``/transcribe`` (for ``gradio_client`` and scripts): the same run, returning
  the MIDI files, the piano-roll PNGs, the results as JSON and the report zip.
"""
from __future__ import annotations

import html
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from . import compare, metrics, pianoroll, runs
from .audio import AudioError, Clip, load_clip, max_seconds
from .manager import ModelManager, eager_requested, get_manager
from .notes import Note, instrument_name, note_stats, notes_from_midi

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples_audio"
CSS_PATH = Path(__file__).resolve().parent / "assets" / "ui.css"

ALL_INSTRUMENTS = "All instruments"
QUEUE_SIZE_ENV = "MT3_DEMO_QUEUE_SIZE"
CONCURRENCY_ENV = "MT3_DEMO_CONCURRENCY"
RUN_TTL_S = runs.RUN_TTL_S  # per-request output folders older than this are removed on the next run
MAX_UPLOAD = "200mb"  # 10 minutes of 48 kHz stereo WAV is ~110 MB

# Example labels come from clips.json; these say what each kind demonstrates.
_KIND_LABEL = {"piano": "Solo piano", "band": "Band: piano, guitar, bass, drums",
               "ensemble": "Winds + strings", "drums": "Drums only"}


# ================================================================================================
# Small HTML builders (presentation only)


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _badge(kind: str, text: str) -> str:
    return f'<span class="badge {kind}">{_esc(text)}</span>'


_AVAIL_TEXT = {"ready": "ready", "download": "downloads on first use", "unavailable": "unavailable"}


def _choice_label(manager: ModelManager, model_id: str) -> str:
    """Checkbox label: the model's name and whether it can run here (the reason is shown below)."""
    spec = manager.spec(model_id)
    avail = manager.availability(model_id)
    text = _AVAIL_TEXT.get(avail.status, avail.status)
    if avail.status == "download":
        text += f", ~{spec.size_mb:.0f} MB"
    return f"{spec.display_name} — {text}"


def _availability_md(manager: ModelManager) -> str:
    """Why each not-ready model is not ready, and how to fix it (verbatim from the manager)."""
    lines = []
    for model_id in manager.model_ids():
        avail = manager.availability(model_id)
        if avail.status != "ready":
            name = manager.spec(model_id).display_name
            lines.append(f"<li><b>{_esc(name)}</b> ({_esc(_AVAIL_TEXT.get(avail.status, avail.status))}): "
                         f"{_esc(avail.reason)}</li>")
    for module, error in getattr(manager, "import_errors", {}).items():
        lines.append(f"<li><code>{_esc(module)}</code> could not be loaded: {_esc(error)}</li>")
    if not lines:
        return '<div class="availability">All models are ready on this machine.</div>'
    return f'<div class="availability"><ul>{"".join(lines)}</ul></div>'


def _header_html(manager: ModelManager) -> str:
    cards = []
    for model_id in manager.model_ids():
        spec = manager.spec(model_id)
        avail = manager.availability(model_id)
        paper = (f' · <a href="{_esc(spec.paper_url)}" target="_blank" rel="noopener">paper</a>'
                 if spec.paper_url else "")
        cards.append(
            f'<div class="mt3-model"><span class="name">{_esc(spec.display_name)}</span>'
            f'{_badge(avail.status, _AVAIL_TEXT.get(avail.status, avail.status))}<br>'
            f'{_esc(spec.description)}<br>'
            f'<span class="meta">{_esc(spec.instruments)} · licence: {_esc(spec.licence)}{paper}</span></div>')
    return (
        '<div class="mt3-header"><h1>MT3 family — side-by-side music transcription</h1>'
        '<p class="tagline">Give it a recording; every selected model writes down the notes it hears. '
        'Compare their piano rolls, listen to them next to the original, download the MIDI, and '
        'score them against a reference when you have one. Everything runs on this server; nothing '
        'is sent elsewhere.</p>'
        f'<div class="mt3-models">{"".join(cards)}</div></div>')


INFO_LABELS = {
    "compat": "compat", "frontend": "frontend", "memory_length": "memory N", "checkpoint": "checkpoint",
    "trim": "trim", "segments": "segments", "segments_without_eos": "segments without EOS",
    "max_tokens": "max tokens", "segment_s": "segment s", "hop_s": "hop s",
}


def _stats_html(result: compare.ModelResult) -> str:
    """Stat tiles: note counts, pitch range, timings, device; then per-instrument counts."""
    t = result.transcription
    assert t is not None
    s = note_stats(t.notes)
    rng = s["pitch_range"]
    tiles = [
        ("Notes", s["total"]), ("Pitched", s["pitched"]), ("Drum", s["drum"]),
        ("Instruments", s["instruments"]),
        ("Pitch range", metrics.pitch_range_name(rng or [])),
        ("Load", f"{t.load_seconds:.1f} s"), ("Inference", f"{t.inference_seconds:.1f} s"),
        ("RTF", f"{t.rtf:.2f}"), ("Device", f"{t.device} · {t.dtype}"),
    ]
    grid = "".join(f'<div class="stat"><div class="k">{_esc(k)}</div><div class="v">{_esc(v)}</div></div>'
                   for k, v in tiles)
    # Colour swatches: the same instrument colours as the piano roll's legend.
    inst = []
    by_name: dict[str, Note] = {}
    for n in t.notes:
        by_name.setdefault(instrument_name(n.program, n.is_drum, n.label), n)
    for name, count in s["per_instrument"].items():
        n = by_name[name]
        color = pianoroll.instrument_color(n.program, n.is_drum, n.label)
        inst.append(f'<span class="inst-item"><span class="swatch" style="background:{color}"></span>'
                    f'{_esc(name)} <b>{count}</b></span>')
    inst_html = f'<div class="inst-list">{"".join(inst)}</div>' if inst else \
        '<div class="info-line">No notes found (is this a kind of music the model was trained on?)</div>'
    # Model-specific facts that say *what ran* (frontend, compatibility mode, memory length…);
    # diagnostics such as stage timings and error counters stay in results.json.
    facts = [f"{label}: {_esc(t.info[key])}" for key, label in INFO_LABELS.items()
             if isinstance(t.info.get(key), (str, int, float)) and not isinstance(t.info.get(key), bool)]
    info = f'<div class="info-line">{" · ".join(facts)}</div>' if facts else ""
    return f'<div class="stat-grid">{grid}</div>{inst_html}{info}'


def _table_html(headers: list[str], rows: list[list[Any]], best: set[tuple[int, int]] = frozenset(),
                group_row: str = "", classes: str = "mt3-table") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="best">{_esc(v)}</td>' if (i, j) in best else f"<td>{_esc(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return (f'<div class="mt3-table-wrap"><table class="{classes}"><thead>{group_row}<tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


_SCORE_GROUPS = [("onset", "Onset"), ("onset_offset", "Onset + offset"),
                 ("program_aware", "Program-aware")]
_PRF = [("precision", "P"), ("recall", "R"), ("f1", "F1")]


def _scores_html(names: list[str], scores: list[dict[str, Any]], reference_name: str) -> str:
    """One row per model, P/R/F1 for each metric; the best value of each column highlighted."""
    groups = list(_SCORE_GROUPS)
    if any(sc.get("counts", {}).get("ref_drums") for sc in scores):
        groups.append(("drums", "Drums (onset)"))
    rows, values = [], []
    for name, sc in zip(names, scores):
        row_vals = [float(sc.get(g, {}).get(k, float("nan"))) for g, _ in groups for k, _ in _PRF]
        values.append(row_vals)
        rows.append([name] + [f"{v:.3f}" if v == v else "—" for v in row_vals])
    best: set[tuple[int, int]] = set()
    if len(rows) > 1:  # with one model every value is "best": highlighting would say nothing
        for j in range(len(groups) * len(_PRF)):
            col = [r[j] for r in values if r[j] == r[j]]
            if col:
                top = max(col)
                best |= {(i, j + 1) for i, r in enumerate(values) if r[j] == top}
    group_row = '<tr><th></th>' + "".join(f'<th class="group" colspan="3">{_esc(label)}</th>'
                                         for _, label in groups) + "</tr>"
    headers = ["Model"] + [p for _ in groups for _, p in _PRF]
    note = ('<div class="note">mir_eval note metrics against <b>' + _esc(reference_name) + '</b>: onset '
            'within 50 ms and the same pitch; "onset + offset" also needs the offset within 20 % of the '
            'note length (min 50 ms); "program-aware" also needs the right instrument family (drums: '
            'onset only).</div>')
    return _table_html(headers, rows, best, group_row) + note


def _agreement_html(names: list[str], matrix: Any) -> str:
    """Pairwise onset F1 between models as a shaded table (a heatmap that also reads on a phone)."""
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            v = float(matrix[i][j])
            # Indigo with opacity = agreement; white text once the cell gets dark.
            fg = "#ffffff" if v > 0.55 else "inherit"
            cells.append(f'<td style="background:rgba(79,70,229,{0.08 + 0.85 * v:.2f});color:{fg}">'
                         f"{v:.2f}</td>")
        body.append(f"<tr><th>{_esc(name)}</th>{''.join(cells)}</tr>")
    return (f'<div class="mt3-table-wrap"><table class="mt3-table heatmap"><thead><tr><th></th>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            '<div class="note">Onset F1 of each model against each other model (1 = they wrote the same '
            'notes, 0 = nothing in common). Symmetric; the diagonal is 1.</div>')


_BREAKDOWN_COLUMNS = [("instrument", "Instrument"), ("family", "Family"), ("notes", "Notes"),
                      ("pitch_range", "Range / drum kinds"), ("first_onset", "First onset s"),
                      ("last_onset", "Last onset s")]


def _breakdown_html(notes: list[Note]) -> str:
    """Per-instrument table (name, family, notes, pitch range, first/last onset)."""
    rows = metrics.instrument_breakdown(notes)
    if not rows:
        return '<div class="note">No notes.</div>'
    return _table_html([label for _, label in _BREAKDOWN_COLUMNS],
                       [[_fmt_cell(r.get(key)) for key, _ in _BREAKDOWN_COLUMNS] for r in rows])


def _fmt_cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return "—" if v is None else str(v)


class InputError(ValueError):
    """Something the user can fix on the page (nothing selected, unreadable reference MIDI)."""


# Errors shown to people verbatim, in a warning and the status line (never a stack trace).
USER_ERRORS = (AudioError, InputError)


# ================================================================================================
# One run: transcribe, render, score, bundle (shared by the page and the API endpoint)


@dataclass
class RunState:
    """What the page keeps between events of one session (for the instrument view)."""

    out_dir: str = ""
    duration: float = 0.0
    model_ids: list[str] = field(default_factory=list)  # card index -> model id
    names: list[str] = field(default_factory=list)
    notes: dict[str, list[Note]] = field(default_factory=dict)


@dataclass
class RunSummary:
    results: list[compare.ModelResult]
    report: compare.RunReport
    reference_name: str = ""


def _load_reference(reference: str | None) -> tuple[list[Note] | None, str]:
    if not reference:
        return None, ""
    try:
        return notes_from_midi(reference), Path(reference).name
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise InputError(f"The reference MIDI '{Path(reference).name}' could not be read ({e}). "
                         "Upload a standard .mid file or leave the reference empty.") from e


def _run(audio: str | None, model_ids: list[str], reference: str | None, manager: ModelManager,
         progress: gr.Progress | None, synthesize: bool = True) -> Iterator[tuple[str, Any]]:
    """The run both entry points share. Yields ("clip", Clip), then ("model", (index, result,
    per model as it finishes, then ("done", RunSummary). Raises AudioError / InputError.
    ``synthesize``: render the listening WAVs (the page plays them; the API returns none)."""
    if not model_ids:
        raise InputError("Select at least one model.")
    # --- disk (issue 13.7): a rejected upload is deleted now, not hours later by Gradio's cache
    try:
        ref_notes, ref_name = _load_reference(reference)
    except USER_ERRORS:
        runs.discard_upload(reference)
        raise
    try:
        clip = load_clip(audio)
    except USER_ERRORS:
        runs.discard_upload(audio)
        raise
    out_dir = runs.new_run_dir()
    try:
        yield from _run_models(clip, out_dir, model_ids, manager, progress, synthesize, ref_notes, ref_name)
    finally:
        runs.release(out_dir)
    # --- end disk


def _run_models(clip: Clip, out_dir: Path, model_ids: list[str], manager: ModelManager,
                progress: gr.Progress | None, synthesize: bool, ref_notes: list[Note] | None,
                ref_name: str) -> Iterator[tuple[str, Any]]:
    # Keep the user's file name on the report (Gradio's upload path ends in the original name).
    yield "clip", (clip, out_dir)
    n = len(model_ids)
    done = 0

    def on_progress(model_id: str, frac: float, desc: str) -> None:
        if progress is not None:
            progress((done + min(max(frac, 0.0), 1.0)) / n, desc=desc)

    results = []
    for result in compare.run(clip, model_ids, manager, out_dir, on_progress=on_progress,
                              synthesize=synthesize):
        plain = result.files.pop("audio", None)  # the page plays the level-matched WAV and the mix
        if plain is not None:
            plain.unlink(missing_ok=True)
        results.append(result)
        yield "model", (model_ids.index(result.model_id), result)
        done += 1
    if progress is not None:
        progress(1.0, desc="Scoring and writing the report…")
    report = compare.finish_run(results, clip, out_dir, reference=ref_notes, reference_name=ref_name or None)
    yield "done", RunSummary(results, report, ref_name)


# ================================================================================================
# ZeroGPU: a GPU is attached per call, for at most `duration` seconds


def _zero_gpu() -> bool:
    return bool(os.environ.get("SPACES_ZERO_GPU")) and importlib.util.find_spec("spaces") is not None


def _gpu_seconds(audio: str | None, model_ids: list[str] | None = None, *_: Any, **__: Any) -> int:
    """GPU time to ask for: a fixed start-up cost plus ~1 s per audio second per model, capped."""
    seconds = 60.0
    try:
        import soundfile as sf

        seconds = sf.info(str(audio)).duration  # header only; the real decode happens in the run
    except Exception:  # noqa: BLE001 - unknown length: ask for the default
        pass
    return int(min(300, 20 + seconds * 1.0 * max(1, len(model_ids or []))))


def _on_gpu(fn):
    """``spaces.GPU`` with a duration from the audio length on ZeroGPU; the plain function elsewhere."""
    if not _zero_gpu():
        return fn
    import spaces

    return spaces.GPU(duration=_gpu_seconds)(fn)


# ================================================================================================
# The page


@dataclass
class Card:
    column: Any
    head: Any
    roll: Any
    instrument: Any
    stats: Any
    midi: Any
    synth: Any
    mix: Any
    breakdown: Any

    def components(self) -> list[Any]:
        return [self.column, self.head, self.roll, self.instrument, self.stats, self.midi, self.synth,
                self.mix, self.breakdown]


def _examples() -> tuple[list[list[str | None]], list[str]]:
    """Example clips (wav + ground-truth mid) and labels from examples_audio/clips.json."""
    import json

    meta = {}
    if (EXAMPLES_DIR / "clips.json").is_file():
        meta = json.loads((EXAMPLES_DIR / "clips.json").read_text())
    rows, labels = [], []
    order = list(_KIND_LABEL)  # piano first: it is what the embedded default model is for
    wavs = sorted(EXAMPLES_DIR.glob("*.wav"),
                  key=lambda w: (order.index(meta.get(w.stem, {}).get("kind")) if
                                 meta.get(w.stem, {}).get("kind") in order else len(order), w.name))
    for wav in wavs:
        mid = wav.with_suffix(".mid")
        info = meta.get(wav.stem, {})
        composer = str(info.get("composer", "")).split(" (")[0]
        piece = str(info.get("piece", wav.stem)).split(" (")[0].split(",")[0]
        kind = _KIND_LABEL.get(info.get("kind", ""), info.get("kind", ""))
        seconds = info.get("wav", {}).get("duration_s")
        rows.append([str(wav), str(mid) if mid.is_file() else None])
        labels.append(f"{kind} — {piece}, {composer}" + (f" ({seconds:.0f} s)" if seconds else ""))
    return rows, labels


# Output players: the browser's own compact player (one line; scales to a phone) instead of a waveform.
_PLAYER = gr.WaveformOptions(show_recording_waveform=False)


def _card_head(name: str, state: str, detail: str = "") -> str:
    kind = {"queued": "queued", "running": "running", "done": "done", "error": "error"}[state]
    text = {"queued": "waiting", "running": "transcribing…", "done": "done", "error": "failed"}[state]
    extra = f'<p class="card-error">{_esc(detail)}</p>' if state == "error" else (
        f"<p>{_esc(detail)}</p>" if detail else "")
    return f"<h3>{_esc(name)} {_badge(kind, text)}</h3>{extra}"


def build_demo(manager: ModelManager | None = None) -> gr.Blocks:
    """Build the Blocks app. Models load lazily on first use (eagerly when the host asks for it)."""
    manager = manager or get_manager()
    if eager_requested():
        # ZeroGPU wants weights on the (emulated) GPU at import time, not inside the GPU call.
        errors = manager.preload()
        for model_id, error in errors.items():
            log.warning("preload %s failed: %s", model_id, error)
    model_ids = manager.model_ids()
    n_cards = max(1, len(model_ids))
    example_rows, example_labels = _examples()

    with gr.Blocks(title="MT3 family — side-by-side transcription",
                   delete_cache=(3600, RUN_TTL_S)) as demo:
        header = gr.HTML(_header_html(manager), padding=False)

        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=320):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                 label=f"Recording (WAV, FLAC, OGG, MP3; up to {max_seconds() / 60:.0f} min)",
                                 elem_id="audio-input")
                reference = gr.File(label="Reference MIDI for scoring (optional; examples bring their own)",
                                    file_types=[".mid", ".midi"], height=90, elem_id="reference-input")
                gr.Examples(examples=example_rows, inputs=[audio, reference], label="Examples (click one)",
                            example_labels=example_labels, cache_examples=False, visible_columns=[0],
                            elem_id="examples")
            with gr.Column(scale=4, min_width=300):
                models = gr.CheckboxGroup(
                    choices=[(_choice_label(manager, m), m) for m in model_ids],
                    value=manager.default_selection(), label="Models",
                    info="Each selected model transcribes the same 16 kHz mono audio, one after another.",
                    elem_id="model-choice")
                with gr.Accordion("Why are some models not ready here?", open=False,
                                  elem_id="availability"):
                    availability = gr.HTML(_availability_md(manager), padding=False)
                run = gr.Button("Transcribe", variant="primary", elem_id="run-button")
                status = gr.Markdown("Pick an example or upload a recording, then press **Transcribe**.",
                                     elem_classes="run-status", elem_id="run-status")
                report = gr.DownloadButton("Download report (.zip)", visible=False, elem_id="report-button",
                                           variant="secondary")

        original = gr.Audio(label="Original recording (transcriptions are level-matched to it)", interactive=False, visible=False,
                            elem_id="original-audio", waveform_options=_PLAYER)

        cards: list[Card] = []
        with gr.Row(equal_height=False, elem_id="cards"):
            for i in range(n_cards):
                with gr.Column(visible=False, min_width=460, elem_classes="model-card",
                               elem_id=f"card-{i}") as column:
                    head = gr.HTML("", elem_classes="card-head", padding=False)
                    roll = gr.Image(type="filepath", show_label=False, interactive=False,
                                    buttons=["download", "fullscreen"], format="png",
                                    elem_classes="piano-roll", visible=False)
                    instrument = gr.Dropdown(choices=[ALL_INSTRUMENTS], value=ALL_INSTRUMENTS,
                                             label="Piano roll: show", visible=False, interactive=True)
                    stats = gr.HTML("", padding=False, elem_classes="card-stats")
                    midi = gr.DownloadButton("Download MIDI", visible=False, size="md",
                                             elem_classes="midi-download", variant="secondary")
                    with gr.Row(equal_height=False):
                        synth_audio = gr.Audio(label="Transcription, synthesized", interactive=False,
                                               visible=False, min_width=260, waveform_options=_PLAYER)
                        mix_audio = gr.Audio(label="Original L + transcription R",
                                             interactive=False, visible=False, min_width=260,
                                             waveform_options=_PLAYER)
                    with gr.Accordion("Per-instrument breakdown", open=False):
                        breakdown = gr.HTML("", padding=False)
                cards.append(Card(column, head, roll, instrument, stats, midi, synth_audio, mix_audio,
                                  breakdown))

        with gr.Tabs(visible=False, elem_id="comparison") as comparison:
            with gr.Tab("Summary"):
                summary = gr.Dataframe(headers=[h for _, h in compare.SUMMARY_COLUMNS],
                                       interactive=False, wrap=True, buttons=["copy"],
                                       elem_id="summary-table")
            with gr.Tab("Scores vs reference"):
                scores = gr.HTML("", padding=False)
            with gr.Tab("Model agreement"):
                agreement = gr.HTML("", padding=False)

        state = gr.State(RunState())

        # Hidden outputs of the plain API endpoint (no page component shows them).
        api_midi = gr.File(file_count="multiple", visible=False, label="MIDI files")
        api_png = gr.File(file_count="multiple", visible=False, label="piano rolls")
        api_json = gr.JSON(visible=False, label="results")
        api_zip = gr.File(visible=False, label="report zip")
        api_button = gr.Button(visible=False)

        card_outputs = [c for card in cards for c in card.components()]
        page_outputs = [status, original, report, comparison, summary, scores, agreement, state,
                        *card_outputs]

        # ---------------------------------------------------------------- the page's run handler
        def transcribe_page(audio_path, selected, reference_path, progress=gr.Progress()):
            selected = list(selected or [])
            try:
                steps = _run(audio_path, selected, reference_path, manager, progress)
                _, (clip, out_dir) = next(steps)
            except USER_ERRORS as e:
                gr.Warning(str(e))
                yield {status: f"**Could not transcribe:** {e}"}
                return
            names = [manager.spec(m).display_name if m in model_ids else m for m in selected]
            run_state = RunState(out_dir=str(out_dir), duration=clip.duration, model_ids=selected,
                                 names=names)
            warnings = "".join(f"\n\n**Note:** {w}" for w in clip.warnings)
            for w in clip.warnings:
                gr.Warning(w)
            first: dict[Any, Any] = {
                status: f"Transcribing {clip.duration:.1f} s of audio with {len(selected)} "
                        f"model{'s' if len(selected) > 1 else ''}…{warnings}",
                original: gr.update(value=str(audio_path), visible=True),
                report: gr.update(value=None, visible=False),
                comparison: gr.update(visible=False),
                state: run_state,
            }
            for i, card in enumerate(cards):
                used = i < len(selected)
                first[card.column] = gr.update(visible=used)
                if used:
                    first[card.head] = _card_head(names[i], "running" if i == 0 else "queued")
                    for comp in (card.roll, card.instrument, card.midi, card.synth, card.mix):
                        first[comp] = gr.update(visible=False, value=None)
                    first[card.instrument] = gr.update(visible=False, choices=[ALL_INSTRUMENTS],
                                                       value=ALL_INSTRUMENTS)
                    first[card.stats] = ""
                    first[card.breakdown] = ""
            yield first

            try:
                for kind, payload in steps:
                    if kind == "model":
                        i, result = payload
                        update = _card_update(cards[i], result)
                        if i + 1 < len(selected):
                            update[cards[i + 1].head] = _card_head(names[i + 1], "running")
                        if result.ok:
                            run_state.notes[result.model_id] = result.transcription.notes
                        else:
                            gr.Warning(result.error)
                        update[state] = run_state
                        yield update
                    elif kind == "done":
                        yield _summary_update(payload, names, clip, warnings)
            except USER_ERRORS as e:
                gr.Warning(str(e))
                yield {status: f"**Could not transcribe:** {e}"}

        def _card_update(card: Card, result: compare.ModelResult) -> dict:
            if not result.ok:
                return {card.head: _card_head(result.display_name, "error", result.error or "failed")}
            t = result.transcription
            detail = f"{len(t.notes)} notes · RTF {t.rtf:.2f} on {t.device}"
            instruments = pianoroll.instruments_in(t.notes)
            # Say honestly which synthesizer made the sound (the fallback cannot sound like FluidSynth).
            method = result.synth_method or ""
            synth_label = ("Transcription (FluidSynth)" if method.startswith("fluidsynth")
                           else f"Transcription — {method}" if method else "Transcription, synthesized")
            files = result.files
            return {
                card.head: _card_head(result.display_name, "done", detail),
                card.roll: gr.update(value=str(result.files["png"]), visible=True),
                card.instrument: gr.update(choices=[ALL_INSTRUMENTS] + instruments, value=ALL_INSTRUMENTS,
                                           visible=len(instruments) > 1),
                card.stats: _stats_html(result),
                card.midi: gr.update(value=str(result.files["midi"]), visible=True),
                card.synth: gr.update(value=str(files["audio_matched"]) if "audio_matched" in files else None,
                                      label=synth_label, visible="audio_matched" in files),
                card.mix: gr.update(value=str(files["mix"]) if "mix" in files else None,
                                    visible="mix" in files),
                card.breakdown: _breakdown_html(t.notes),
            }

        def _summary_update(summary_data: RunSummary, names: list[str], clip: Clip, warnings: str) -> dict:
            results = summary_data.results
            ok = [r for r in results if r.ok]
            rows = [[r.summary_row().get(k, "") for k, _ in compare.SUMMARY_COLUMNS] for r in results]
            report_data = summary_data.report
            if report_data.scores:
                scores_html = _scores_html([r.display_name for r in ok],
                                           [report_data.scores[r.model_id] for r in ok],
                                           summary_data.reference_name)
            else:
                scores_html = ('<div class="note">No reference: click an example (they carry their '
                               'ground-truth MIDI) or upload a reference MIDI to score the models.</div>')
            if len(ok) > 1:
                ids, matrix = report_data.agreement_ids, report_data.agreement
                id_to_name = {r.model_id: r.display_name for r in ok}
                agreement_html = _agreement_html([id_to_name.get(i, i) for i in ids], matrix)
            else:
                agreement_html = '<div class="note">Select two or more models to see how much they agree.</div>'
            failed = len(results) - len(ok)
            msg = f"**Done:** {len(ok)} of {len(results)} model{'s' if len(results) > 1 else ''} transcribed " \
                  f"{clip.duration:.1f} s of audio."
            if failed:
                msg += f" {failed} failed (see the card{'s' if failed > 1 else ''})."
            return {
                status: msg + warnings,
                report: gr.update(value=str(report_data.zip_path), visible=True),
                comparison: gr.update(visible=True),
                summary: rows,
                scores: scores_html,
                agreement: agreement_html,
            }

        page_handler = _on_gpu(transcribe_page)
        run_event_kwargs = dict(concurrency_id="model", concurrency_limit=_concurrency(),
                                show_progress_on=[status])
        run.click(page_handler, inputs=[audio, models, reference], outputs=page_outputs,
                  api_visibility="private", **run_event_kwargs)

        # ---------------------------------------------------------------- plain API endpoint
        def transcribe_api(audio_path, selected, reference_path, progress=gr.Progress()):
            """Transcribe one recording with the selected models.

            Returns the MIDI files, the piano-roll PNGs, the results (per model: notes, stats,
            timings, RTF, device, errors; scores and agreement when available) and the report zip.
            """
            selected = [selected] if isinstance(selected, str) else list(selected or [])
            try:
                summary_data = None
                for kind, payload in _run(audio_path, selected, reference_path, manager, progress,
                                          synthesize=False):  # the API returns no audio
                    if kind == "done":
                        summary_data = payload
            except USER_ERRORS as e:
                raise gr.Error(str(e), print_exception=False) from None
            assert summary_data is not None
            import json

            results = json.loads(summary_data.report.results_json.read_text())
            ok = [r for r in summary_data.results if r.ok]
            if not ok:
                raise gr.Error("No model could transcribe this recording: " + " | ".join(
                    f"{r.display_name}: {r.error}" for r in summary_data.results), print_exception=False)
            return ([str(r.files["midi"]) for r in ok], [str(r.files["png"]) for r in ok], results,
                    str(summary_data.report.zip_path))

        api_button.click(_on_gpu(transcribe_api), inputs=[audio, models, reference],
                         outputs=[api_midi, api_png, api_json, api_zip], api_name="transcribe",
                         concurrency_id="model", concurrency_limit=_concurrency())

        # ---------------------------------------------------------------- small page events
        def show_instrument(index: int, choice: str, run_state: RunState):
            """Re-draw one card's piano roll restricted to one instrument (same time axis)."""
            if not run_state or index >= len(run_state.model_ids):
                return gr.skip()
            model_id = run_state.model_ids[index]
            notes = run_state.notes.get(model_id)
            if notes is None:
                return gr.skip()
            out_dir = Path(run_state.out_dir)
            if not out_dir.is_dir():  # pruned (older than 6 h, or over MT3_DEMO_RUNS_MAX_MB)
                return gr.skip()
            stem = compare.safe_name(model_id)
            if not choice or choice == ALL_INSTRUMENTS:
                return str(out_dir / f"{stem}.png")
            path = out_dir / f"{stem}__only_{compare.safe_name(choice)}.png"
            if not path.exists():
                pianoroll.save_png(notes, run_state.duration, path, title=run_state.names[index],
                                   only_instrument=choice)
            return str(path)

        for i, card in enumerate(cards):
            card.instrument.input(show_instrument, inputs=[gr.State(i), card.instrument, state],
                                  outputs=card.roll, api_visibility="private", show_progress="minimal")

        # A new recording invalidates the example's ground truth: clear the reference on upload/record.
        for event in (audio.upload, audio.stop_recording, audio.clear):
            event(lambda: None, outputs=reference, api_visibility="private", queue=False)

        # Availability can change while the app runs (a checkpoint downloaded, a folder filled):
        # refresh the labels and reasons on every page load.
        def refresh_models(selected):
            choices = [(_choice_label(manager, m), m) for m in model_ids]
            return gr.update(choices=choices), _availability_md(manager), _header_html(manager)

        demo.load(refresh_models, inputs=[models], outputs=[models, availability, header],
                  api_visibility="private", queue=False)

    demo.queue(max_size=_queue_size(), default_concurrency_limit=1)
    return demo


def _concurrency() -> int:
    """Runs at a time per device: models share one device; more runs would only slow each other."""
    try:
        return max(1, int(os.environ.get(CONCURRENCY_ENV, "1")))
    except ValueError:
        return 1


def _queue_size() -> int:
    # Explicit, because on ZeroGPU Gradio would otherwise cap the queue at one waiting user.
    try:
        return max(1, int(os.environ.get(QUEUE_SIZE_ENV, "20")))
    except ValueError:
        return 20


def launch_kwargs() -> dict[str, Any]:
    """Arguments for ``demo.launch`` that Gradio 6 no longer takes in ``Blocks()`` (theme, CSS)."""
    return dict(
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="slate"),
        css_paths=[CSS_PATH],
        allowed_paths=[str(EXAMPLES_DIR)],
        max_file_size=MAX_UPLOAD,
        footer_links=["api", "settings"],
        ssr_mode=False,  # no Node server: one process, works offline
    )
