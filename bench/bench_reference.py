"""What a hostile reference MIDI costs the server (issue 21): time and peak memory to refuse or read
it, and to score a transcription against the largest one accepted.

    python bench/bench_reference.py

Each case runs in a fresh child process (``harness.run_in_child``; peak RSS = VmHWM, which starts
afresh at exec) after the
imports a server has anyway; the row gives its growth over that baseline. Baselines measured in the
same run: a real reference (the piano example, 227 notes), and scoring against it. The hostile
files come from ``hostile.dense_reference``: n notes evenly over the recording, pitches cycling
over the piano — the densest a visitor can send.
Writes bench/results/bench_reference.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, peak_rss_mb, run_in_child, table, write_result  # noqa: E402

PIANO_MID = ROOT / "examples_audio" / "piano_cschumann_polonaise.mid"
SECONDS = 600.0  # the app's longest recording: the worst case for trimming and scoring


def estimate(seconds: float, per_second: float = 10.0) -> list:
    """A transcription's notes: ``per_second`` piano notes a second (a dense model output)."""
    from mt3_demo.notes import Note

    n = int(seconds * per_second)
    return [Note(i / per_second, i / per_second + 0.3, 21 + (i * 7) % 88) for i in range(n)]


def child(case: str, path: str) -> dict:
    """One case, in a fresh process (:func:`harness.run_in_child`): its row."""
    from mt3_demo import metrics, reference  # noqa: F401 - the imports a server has done already
    import mir_eval.transcription  # noqa: F401

    est = estimate(SECONDS)
    base = peak_rss_mb()
    start = time.perf_counter()
    try:
        notes = reference.read_reference(path)
        notes, _ = reference.fit(notes, SECONDS, Path(path).name)
        outcome = f"{len(notes)} notes"
        if case.startswith("score"):
            metrics.score(est, notes)
            outcome += f", scored against {len(est)}"
    except reference.ReferenceError as e:
        outcome = "refused: " + str(e).split("'")[-1].split(";")[0].strip()[:50]
    seconds = time.perf_counter() - start
    return {"case": case, "seconds": round(seconds, 5), "peak_growth_mb": round(peak_rss_mb() - base, 1),
            "outcome": outcome}


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    from hostile import dense_reference

    from mt3_demo import reference

    rows = []
    with tempfile.TemporaryDirectory(prefix="mt3-reference-") as tmp:
        files = {"read: piano example (baseline)": PIANO_MID,
                 "score: piano example (baseline)": PIANO_MID}
        for label, notes in (("read: 1 000 000 notes", 1_000_000),
                             (f"read: {reference.MAX_NOTES + 1:,} notes (over the bound)", reference.MAX_NOTES + 1),
                             (f"read: {reference.MAX_NOTES:,} notes (the bound)", reference.MAX_NOTES),
                             (f"score: {reference.MAX_NOTES:,} notes (the bound)", reference.MAX_NOTES)):
            path = Path(tmp) / f"{notes}.mid"
            path.write_bytes(dense_reference(notes, SECONDS))
            files[label] = path
        for case, path in files.items():
            rows.append(run_in_child(child, case, str(path)))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows, ["case", "seconds", "peak_growth_mb", "outcome"]))
    by = {r["case"]: r for r in rows}
    ratios = {
        "score at the note bound vs the piano example, peak growth": round(
            by[f"score: {reference.MAX_NOTES:,} notes (the bound)"]["peak_growth_mb"]
            / max(1.0, by["score: piano example (baseline)"]["peak_growth_mb"]), 1),
        "refusing 1 000 000 notes vs reading the piano example, seconds": round(
            by["read: 1 000 000 notes"]["seconds"] / max(1e-5, by["read: piano example (baseline)"]["seconds"]), 3),
    }
    print(json.dumps(ratios))
    write_result("bench_reference", rows, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
