"""Note-level scores: a transcription against a reference, and models against each other.

All matching is done by ``mir_eval.transcription.match_notes`` with the standard tolerances (onset
±50 ms, pitch ±50 cents, offset within 20 % of the reference note's duration or 50 ms). We count
matched notes ourselves instead of calling ``precision_recall_f1_overlap`` per group, so grouped
scores can be aggregated the way MT3 does: precision = Σ matched / Σ estimated notes and recall =
Σ matched / Σ reference notes over all groups (magenta/mt3 sums ``precision × n_est`` and
``recall × n_ref``, which are exactly the matched counts).

Groups and conventions:

* Drums are only ever matched against drums, and always onset-only: a drum hit has no meaningful
  offset, and drum "pitches" (kick = 36, ...) must not match a piano's C2.
* ``onset`` / ``onset_offset`` are program-agnostic ("flat"): any pitched instrument may match any
  other pitched instrument.
* ``program_aware`` is MT3's "onset + offset + program" metric at ``midi_class`` granularity: a
  pitched note only matches within its General MIDI family (``program // 8``; custom labels such as
  "Singing Voice" are grouped by their program like in the MIDI files), drums onset-only.
* ``drums``: onset-only score of the drum hits alone.

Empty inputs never raise. With notes on one side only, precision and recall are 0 (F1 0). When
*both* sides are empty the score is defined as 1.0 for precision, recall and F1 — nothing had to be
found and nothing was wrongly found (this is what makes two silent models "agree"). ``score()``
also returns the note counts, so a caller can show "n/a" for, e.g., drums on a clip without drums.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np
import pretty_midi

from .instruments import DRUM_KIND_ORDER, DRUMS, GM_FAMILIES, drum_kind, instrument_family, instrument_key, instrument_name
from .notes import Note

ONSET_TOLERANCE = 0.05  # seconds
PITCH_TOLERANCE = 50.0  # cents
OFFSET_RATIO = 0.2
OFFSET_MIN_TOLERANCE = 0.05  # seconds
# Interval length given to notes without a usable duration (drums, zero-length notes): mir_eval
# requires strictly positive durations. 10 ms as in MT3's drum notes.
MIN_DURATION = 0.01


def _arrays(notes: Sequence[Note]) -> tuple[np.ndarray, np.ndarray]:
    """Intervals (s) and pitches (Hz) in mir_eval's format."""
    import mir_eval.util  # here, not at the top: mir_eval loads scipy.stats (~50 MB), needed only to score
    intervals = np.zeros((len(notes), 2))
    for i, n in enumerate(notes):
        onset = max(0.0, float(n.onset))
        intervals[i] = (onset, max(float(n.offset), onset + MIN_DURATION))
    pitches = mir_eval.util.midi_to_hz(np.array([n.pitch for n in notes], dtype=float))
    return intervals, pitches


# Reference × estimated note pairs compared at once. mir_eval's match_notes compares every pair in
# float64 matrices (~30 bytes a pair at its peak): 50 k reference notes against 10 k estimated took
# gigabytes. Blocks of reference notes against only the estimated notes whose onsets can be within
# tolerance keep this to ~120 MB whatever the counts.
MATCH_BLOCK_PAIRS = 1 << 22


def match_notes(ref_int: np.ndarray, ref_hz: np.ndarray, est_int: np.ndarray, est_hz: np.ndarray,
                with_offsets: bool) -> list[tuple[int, int]]:
    """``mir_eval.transcription.match_notes`` with this module's tolerances: the same arithmetic
    (distances rounded as it rounds them), the same graph in the same order (pairs in reference-
    then-estimate order), hence the same matching — computed block by block in bounded memory.
    Returns ``(ref index, est index)`` pairs, sorted."""
    import mir_eval.transcription
    import mir_eval.util

    decimals = mir_eval.transcription.N_DECIMALS
    # A pair whose onsets are further apart than this cannot pass the rounded onset test.
    reach = ONSET_TOLERANCE + 10.0 ** -decimals
    by_onset = np.argsort(est_int[:, 0], kind="stable")
    est_onsets = est_int[by_onset, 0]
    ref_log, est_log = np.log2(ref_hz), np.log2(est_hz)
    if with_offsets:
        offset_tol = np.maximum(OFFSET_RATIO * mir_eval.util.intervals_to_durations(ref_int), OFFSET_MIN_TOLERANCE)
    rows = max(1, MATCH_BLOCK_PAIRS // max(1, len(est_int)))
    graph: dict[int, list[int]] = {}
    for lo in range(0, len(ref_int), rows):
        hi = min(lo + rows, len(ref_int))
        onsets = ref_int[lo:hi, 0]
        first = np.searchsorted(est_onsets, onsets.min() - reach, side="left")
        last = np.searchsorted(est_onsets, onsets.max() + reach, side="right")
        cols = np.sort(by_onset[first:last])  # ascending, as mir_eval's columns
        if not len(cols):
            continue
        onset_d = np.around(np.abs(np.subtract.outer(onsets, est_int[cols, 0])), decimals=decimals)
        hit = onset_d <= ONSET_TOLERANCE
        del onset_d
        hit &= np.abs(1200 * np.subtract.outer(ref_log[lo:hi], est_log[cols])) <= PITCH_TOLERANCE
        if with_offsets:
            offset_d = np.around(np.abs(np.subtract.outer(ref_int[lo:hi, 1], est_int[cols, 1])), decimals=decimals)
            hit &= offset_d <= offset_tol[lo:hi, None]
            del offset_d
        for r, c in zip(*np.nonzero(hit)):  # row-major: reference, then estimate, ascending
            graph.setdefault(int(cols[c]), []).append(lo + int(r))
    return sorted(mir_eval.util._bipartite_match(graph).items())


def match_pairs(est: Sequence[Note], ref: Sequence[Note], with_offsets: bool) -> list[tuple[int, int]]:
    """mir_eval's maximum one-to-one matching as ``(est index, ref index)`` pairs."""
    if not est or not ref:
        return []
    ref_int, ref_hz = _arrays(ref)
    est_int, est_hz = _arrays(est)
    return [(int(e), int(r)) for r, e in match_notes(ref_int, ref_hz, est_int, est_hz, with_offsets)]


def count_matches(est: Sequence[Note], ref: Sequence[Note], with_offsets: bool) -> int:
    """Size of the maximum one-to-one matching between estimated and reference notes."""
    return len(match_pairs(est, ref, with_offsets))


def prf(matched: int, n_est: int, n_ref: int) -> dict[str, float]:
    """Precision, recall and F1 from counts, with the empty-input conventions of this module."""
    if n_est == 0 and n_ref == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = matched / n_est if n_est else 0.0
    recall = matched / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _flat_group(n: Note) -> Hashable:
    return "drums" if n.is_drum else "pitched"


def _midi_class_group(n: Note) -> Hashable:
    return "drums" if n.is_drum else int(n.program) // 8


def _grouped_counts(
    est: Sequence[Note], ref: Sequence[Note], group: Callable[[Note], Hashable], with_offsets: bool,
) -> tuple[int, int, int]:
    """(matched, n_est, n_ref) summed over groups; drum groups are scored onset-only."""
    est_by: dict[Hashable, list[Note]] = defaultdict(list)
    ref_by: dict[Hashable, list[Note]] = defaultdict(list)
    for n in est:
        est_by[group(n)].append(n)
    for n in ref:
        ref_by[group(n)].append(n)
    matched = 0
    for g in set(est_by) & set(ref_by):  # a group on one side only contributes no matches
        matched += count_matches(est_by[g], ref_by[g], with_offsets and g != "drums")
    return matched, len(est), len(ref)


def score(est_notes: Iterable[Note], ref_notes: Iterable[Note]) -> dict:
    """Score a transcription against a reference.

    Returns ``{"onset", "onset_offset", "program_aware", "drums"}``, each ``{"precision", "recall",
    "f1"}`` (floats in [0, 1]), plus ``"counts": {"est", "ref", "est_drums", "ref_drums"}``.
    See the module docstring for the definitions.
    """
    est, ref = list(est_notes), list(ref_notes)
    est_drums = [n for n in est if n.is_drum]
    ref_drums = [n for n in ref if n.is_drum]
    return {
        "onset": prf(*_grouped_counts(est, ref, _flat_group, with_offsets=False)),
        "onset_offset": prf(*_grouped_counts(est, ref, _flat_group, with_offsets=True)),
        "program_aware": prf(*_grouped_counts(est, ref, _midi_class_group, with_offsets=True)),
        "drums": prf(count_matches(est_drums, ref_drums, with_offsets=False), len(est_drums), len(ref_drums)),
        "counts": {"est": len(est), "ref": len(ref), "est_drums": len(est_drums), "ref_drums": len(ref_drums)},
    }


def family_scores(est_notes: Iterable[Note], ref_notes: Iterable[Note]) -> dict[str, dict]:
    """The program-aware score split by instrument family: for each General MIDI family the
    reference plays (drums one family), precision/recall/F1 of the estimated notes of that family
    against the reference's, plus ``"ref"`` and ``"est"`` note counts. Pitched families match with
    offsets, drums onset-only — exactly the groups of ``score(...)["program_aware"]``, so the
    matches summed over families are that score's matches (families only the estimate has are
    leaked instruments: see :mod:`mt3_demo.leakage`)."""
    est_by: dict[Hashable, list[Note]] = defaultdict(list)
    ref_by: dict[Hashable, list[Note]] = defaultdict(list)
    for n in est_notes:
        est_by[_midi_class_group(n)].append(n)
    for n in ref_notes:
        ref_by[_midi_class_group(n)].append(n)
    out = {}
    for group, ref in ref_by.items():
        est = est_by.get(group, [])
        name = DRUMS if group == "drums" else GM_FAMILIES[int(group)]
        out[name] = {**prf(count_matches(est, ref, with_offsets=group != "drums"), len(est), len(ref)),
                     "est": len(est), "ref": len(ref)}
    return dict(sorted(out.items()))


# Which score each diff mode reproduces: (group of a note, offsets checked for pitched notes).
DIFF_MODES: dict[str, tuple[Callable[[Note], Hashable], bool]] = {
    "onset": (_flat_group, False),
    "onset_offset": (_flat_group, True),
    "program_aware": (_midi_class_group, True),
}


def note_diff(est_notes: Iterable[Note], ref_notes: Iterable[Note], mode: str = "onset") -> dict:
    """Classify every note for the diff view with exactly the matching behind :func:`score`.

    ``mode`` names the score reproduced: "onset" (flat: pitch + onset ±50 ms, drums vs drums),
    "onset_offset" (flat, offsets too) or "program_aware" (within a GM family, offsets too; drums
    onset-only). Returns ``{"mode", "est_matched": [bool per est note], "ref_matched": [bool per
    ref note], "pairs": [(est index, ref index)], "matched", "extra", "missed"}``; the counts are the
    true positives, false positives and false negatives of ``score(est, ref)[mode]``.
    """
    if mode not in DIFF_MODES:
        raise ValueError(f"unknown diff mode {mode!r} (use one of {', '.join(DIFF_MODES)})")
    group, with_offsets = DIFF_MODES[mode]
    est, ref = list(est_notes), list(ref_notes)
    est_by: dict[Hashable, list[int]] = defaultdict(list)
    ref_by: dict[Hashable, list[int]] = defaultdict(list)
    for i, n in enumerate(est):
        est_by[group(n)].append(i)
    for i, n in enumerate(ref):
        ref_by[group(n)].append(i)
    pairs: list[tuple[int, int]] = []
    for g in set(est_by) & set(ref_by):
        e_idx, r_idx = est_by[g], ref_by[g]
        local = match_pairs([est[i] for i in e_idx], [ref[i] for i in r_idx], with_offsets and g != "drums")
        pairs += [(e_idx[e], r_idx[r]) for e, r in local]
    pairs.sort()
    est_matched, ref_matched = [False] * len(est), [False] * len(ref)
    for e, r in pairs:
        est_matched[e] = ref_matched[r] = True
    return {"mode": mode, "est_matched": est_matched, "ref_matched": ref_matched, "pairs": pairs,
            "matched": len(pairs), "extra": len(est) - len(pairs), "missed": len(ref) - len(pairs)}


def onset_f1(a: Sequence[Note], b: Sequence[Note]) -> float:
    """Flat onset F1 between two note lists. Symmetric: the matching criteria (onset distance,
    pitch distance) are symmetric, so the maximum matching has the same size either way, and
    F1 = 2·matched / (len(a) + len(b))."""
    return prf(*_grouped_counts(list(a), list(b), _flat_group, with_offsets=False))["f1"]


def agreement(transcriptions: dict[str, Sequence[Note]]) -> tuple[list[str], list[list[float]]]:
    """Pairwise onset F1 between models' outputs: ``(ids, matrix)``, ``matrix[i][j]`` for ids i, j.

    The matrix is symmetric with 1.0 on the diagonal (each pair is computed once and mirrored).
    Plain lists, so it drops straight into JSON.
    """
    ids = list(transcriptions)
    k = len(ids)
    matrix = [[1.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            matrix[i][j] = matrix[j][i] = onset_f1(transcriptions[ids[i]], transcriptions[ids[j]])
    return ids, matrix


def pitch_range_name(pitches: Iterable[int]) -> str:
    """"C4–G5" (pretty_midi note names, C4 = middle C); a single pitch gives just its name."""
    pitches = list(pitches)
    if not pitches:
        return "—"
    lo, hi = min(pitches), max(pitches)
    lo_name = pretty_midi.note_number_to_name(int(lo))
    return lo_name if lo == hi else f"{lo_name}–{pretty_midi.note_number_to_name(int(hi))}"


def instrument_breakdown(notes: Iterable[Note]) -> list[dict]:
    """One row per instrument, most notes first.

    Row keys: ``instrument`` (display name: a custom label such as "Singing Voice" wins over the GM
    program name), ``family``, ``program``, ``is_drum``, ``notes``, ``pitch_range`` (e.g. "C4–G5";
    for drums the kinds of drum heard, e.g. "Kick, Snare, Hi-hat"), ``lowest``/``highest`` (MIDI
    pitches, None for drums), ``first_onset``/``last_onset`` (seconds).
    """
    groups: dict[tuple, list[Note]] = defaultdict(list)
    for n in notes:
        key = instrument_key(n)
        groups[key].append(n)
    rows = []
    for (is_drum, program, label), group in groups.items():
        onsets = [float(n.onset) for n in group]
        if is_drum:
            kinds = sorted({drum_kind(n.pitch) for n in group}, key=DRUM_KIND_ORDER.index)
            pitch_range, lowest, highest = ", ".join(kinds), None, None
        else:
            pitches = [int(n.pitch) for n in group]
            pitch_range, lowest, highest = pitch_range_name(pitches), min(pitches), max(pitches)
        rows.append({
            "instrument": instrument_name(program, is_drum, label),
            "family": instrument_family(program, is_drum, label),
            "program": program,
            "is_drum": is_drum,
            "notes": len(group),
            "pitch_range": pitch_range,
            "lowest": lowest,
            "highest": highest,
            "first_onset": round(min(onsets), 3),
            "last_onset": round(max(onsets), 3),
        })
    rows.sort(key=lambda r: (-r["notes"], r["instrument"]))
    return rows
