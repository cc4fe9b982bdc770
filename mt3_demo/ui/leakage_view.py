"""The instrument-leakage view (Scores tab): MR-MT3's measures per model, from the Run (pure HTML)."""
from __future__ import annotations

from ..results import Run
from .render import model_cell, note, table_html

EXPLANATION = (
    "Instrument leakage (MR-MT3, Tan et al. 2024): how many instruments a model wrote, and how well its "
    "set of instruments matches the reference's (P = share of predicted instruments present in the "
    "reference, R = share of reference instruments found; \"family\": General MIDI families of 8 "
    "programs). Leaked = predicted but absent from the reference; missed = in the reference, not "
    "predicted (with note counts). Drums count as their own instrument (MR-MT3's script counts a drum "
    "kit as a piano). No instruments on either side scores 1, on one side only 0.")


def _listed(entries: list[dict]) -> str:
    return ", ".join(f"{e['name']} ({e['notes']})" for e in entries) or "—"


def leakage_html(run: Run) -> str:
    """A table of ``analyses["instruments"]`` per model with a reference; empty without one."""
    rows = []
    for r in run.ok_results:
        m = r.analyses.get("instruments")
        if not m or "detection" not in m:
            continue
        d = m["detection"]
        rows.append([model_cell(r), m["count"], m["reference_count"], f"{d['precision']:.2f}",
                     f"{d['recall']:.2f}", f"{d['f1']:.2f}", f"{m['family_detection']['f1']:.2f}",
                     _listed(m["leaked"]), _listed(m["missed"])])
    if not rows:
        return ""
    headers = ["Model", "Instruments", "In reference", "P", "R", "F1", "Family F1", "Leaked (notes)",
               "Missed (notes)"]
    # The leaked/missed lists wrap inside their cells: the whole table fits a desktop's results column.
    return "<h4>Instruments</h4>" + table_html(headers, rows, classes="mt3-table leakage") + note(EXPLANATION)
