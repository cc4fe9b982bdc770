"""Instrument leakage: does a model invent instruments that are not in the recording?

MR-MT3 (Tan et al. 2024, arXiv 2403.10024, ``scripts/instrument_leakage/``) measures it per file with
two numbers: how many distinct instruments (MIDI programs) the transcription contains, and
instrument *detection* precision/recall/F1 between the set of predicted programs and the set of
reference programs (matched = predicted programs present in the reference; precision = matched /
predicted, recall = matched / reference).

Differences from that script, on purpose:

* Its script reads only the MIDI ``program``, so a drum kit (program 0 on channel 10) counts as an
  acoustic piano there. Here drums are their own instrument ("Drums"), never confused with a piano.
* Besides the program level we also score the General MIDI *family* level (8 programs per family,
  drums a family of their own): predicting a Bright Piano for an Acoustic Piano leaks at program
  level but not at family level.
* Empty sets have defined values, the same as the note scores (:func:`mt3_demo.metrics.prf`): both
  sides empty → precision = recall = F1 = 1 (nothing to find, nothing wrongly found); one side
  empty → 0. The script divides by zero there.
"""
from __future__ import annotations

from collections import Counter
from typing import Hashable, Iterable, Sequence

from .metrics import prf
from .instruments import DRUMS, instrument_name
from .notes import Note

DRUM_KEY = "drums"  # the instrument key of drum notes; pitched instruments are keyed by program


def _instrument(n: Note) -> Hashable:
    """Program-level identity: the GM program, or :data:`DRUM_KEY` for any drum note."""
    return DRUM_KEY if n.is_drum else int(n.program)


def _family(key: Hashable) -> Hashable:
    """GM family index (program // 8) of an instrument key; drums are a family of their own."""
    return DRUM_KEY if key == DRUM_KEY else int(key) // 8


def _names(notes: Sequence[Note]) -> dict[Hashable, str]:
    """Display name per instrument: the most common label (e.g. 'Singing Voice') or the GM name."""
    labels: dict[Hashable, Counter] = {}
    for n in notes:
        labels.setdefault(_instrument(n), Counter())[n.label] += 1
    names = {}
    for key, counter in labels.items():
        label = counter.most_common(1)[0][0]
        names[key] = DRUMS if key == DRUM_KEY else instrument_name(int(key), False, label)
    return names


def _detection(predicted: set, reference: set) -> dict[str, float]:
    matched = len(predicted & reference)
    return prf(matched, len(predicted), len(reference))


def _entries(keys: Iterable[Hashable], counts: Counter, names: dict[Hashable, str]) -> list[dict]:
    """``[{"program", "name", "notes"}]``, most notes first; drums have ``"program": None``."""
    rows = [{"program": None if k == DRUM_KEY else int(k), "name": names[k], "notes": counts[k]}
            for k in keys]
    rows.sort(key=lambda r: (-r["notes"], r["program"] if r["program"] is not None else 128))
    return rows


def instrument_leakage(est_notes: Iterable[Note], ref_notes: Iterable[Note] | None = None) -> dict:
    """The leakage measures of one transcription, as stored under ``"instruments"`` in results.json.

    Always: ``programs`` (sorted pitched GM programs present), ``drums`` (bool), ``count`` (distinct
    instruments, drums counting as one). With a reference (``ref_notes`` not None, possibly empty)
    also: ``reference_count``, ``detection`` and ``family_detection`` (each ``{"precision",
    "recall", "f1"}``), ``leaked`` (predicted instruments absent from the reference) and ``missed``
    (reference instruments absent from the prediction), each a list of ``{"program", "name",
    "notes"}`` with the note count on its own side; drums appear with ``"program": None``.
    """
    est = list(est_notes)
    est_counts = Counter(_instrument(n) for n in est)
    predicted = set(est_counts)
    out: dict = {
        "programs": sorted(k for k in predicted if k != DRUM_KEY),
        "count": len(predicted),
        "drums": DRUM_KEY in predicted,
    }
    if ref_notes is None:
        return out
    ref = list(ref_notes)
    ref_counts = Counter(_instrument(n) for n in ref)
    reference = set(ref_counts)
    out["reference_count"] = len(reference)
    out["detection"] = _detection(predicted, reference)
    out["family_detection"] = _detection({_family(k) for k in predicted}, {_family(k) for k in reference})
    out["leaked"] = _entries(predicted - reference, est_counts, _names(est))
    out["missed"] = _entries(reference - predicted, ref_counts, _names(ref))
    return out
