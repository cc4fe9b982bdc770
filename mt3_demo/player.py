"""The interactive player's payload: every model's notes (and the reference diff) as compact JSON.

The browser player (``mt3_demo/assets/player/``) draws the rolls itself from this payload; this
module only encodes. Notes become columns of small integers, sorted by onset:

* ``t``: onset in milliseconds, delta-coded against the previous note (sorted, so small and ≥ 0);
* ``d``: duration in milliseconds (≥ 1); ``p``: MIDI pitch; ``v``: velocity;
* ``i``: index into the payload's ``instruments`` table (name, colour as in the PNG, drum flag).

About 17 bytes a note: 20 000 notes stay well under 1 MB. With a reference, each roll carries the
diff of every mode of :data:`mt3_demo.metrics.DIFF_MODES` as two strings of "0"/"1" flags (one
character per note, in the sorted order above): ``est`` (transcribed note matched?) and ``ref``
(reference note matched?), plus the counts, which equal the scores' true/false positives/negatives.

Audio sources are passed through as given: ``{"id", "label", "path"}`` (a file the server may
serve, turned into a Gradio file URL in the page) or ``{"id", "label", "url"}``.
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

from .instruments import DRUM_KIND_ORDER, drum_kind, instrument_key, instrument_name
from .metrics import note_diff
from .notes import Note
from .pianoroll import instrument_color

PAYLOAD_VERSION = 1
DIFF_MODE_LABELS = {
    "onset": "flat: pitch + onset ±50 ms",
    "onset_offset": "flat, with offsets",
    "program_aware": "program-aware: GM family + onset + offset",
}


def _sorted(notes: Iterable[Note]) -> list[Note]:
    return sorted(notes, key=lambda n: (n.onset, n.pitch, n.offset))


def _columns(notes: Sequence[Note], table: dict[tuple, int]) -> dict[str, list[int]]:
    """Columnar, delta-coded integer encoding of notes already sorted by onset."""
    cols: dict[str, list[int]] = {"t": [], "d": [], "p": [], "v": [], "i": []}
    previous = 0
    for n in notes:
        onset_ms = max(0, round(float(n.onset) * 1000))
        cols["t"].append(onset_ms - previous)
        previous = onset_ms
        cols["d"].append(max(1, round(float(n.offset) * 1000) - onset_ms))
        cols["p"].append(int(n.pitch))
        cols["v"].append(int(n.velocity))
        cols["i"].append(table.setdefault(instrument_key(n), len(table)))
    return cols


def _flags(values: Sequence[bool]) -> str:
    return "".join("1" if v else "0" for v in values)


def encode_payload(
    rolls: Sequence[tuple[str, str, Iterable[Note]]],
    duration: float,
    sources: Sequence[dict] = (),
    reference: Iterable[Note] | None = None,
    reference_name: str = "reference",
    diff_modes: Sequence[str] = ("onset", "program_aware"),
) -> dict:
    """The player's payload as a JSON-ready dict.

    ``rolls``: ``(model id, display name, notes)`` per model, in page order. ``duration``: clip
    length in seconds (the shared time axis). ``sources``: the transport's audio choices, first is
    the default. ``reference``: reference notes to diff against (None: no diff toggle).
    """
    table: dict[tuple, int] = {}
    ref_sorted = _sorted(reference) if reference is not None else None
    out_rolls = []
    for model_id, name, notes in rolls:
        est_sorted = _sorted(notes)
        roll = {"id": str(model_id), "name": str(name), "notes": _columns(est_sorted, table)}
        if ref_sorted is not None:
            roll["diff"] = {}
            for mode in diff_modes:
                d = note_diff(est_sorted, ref_sorted, mode)
                roll["diff"][mode] = {"est": _flags(d["est_matched"]), "ref": _flags(d["ref_matched"]),
                                      "matched": d["matched"], "extra": d["extra"], "missed": d["missed"]}
        out_rolls.append(roll)
    payload = {
        "v": PAYLOAD_VERSION,
        "duration": round(float(duration), 3),
        "rolls": out_rolls,
        "sources": [dict(s) for s in sources],
        "reference": None,
        "diff_modes": {m: DIFF_MODE_LABELS.get(m, m) for m in diff_modes} if ref_sorted is not None else {},
    }
    if ref_sorted is not None:
        payload["reference"] = {"name": reference_name, "notes": _columns(ref_sorted, table)}
    # The table is complete only now (the reference may add instruments).
    payload["instruments"] = [
        {"name": instrument_name(program, is_drum, label), "color": instrument_color(program, is_drum, label),
         "drum": is_drum}
        for (is_drum, program, label), _ in sorted(table.items(), key=lambda kv: kv[1])
    ]
    payload["drum_kinds"] = list(DRUM_KIND_ORDER)
    payload["drum_kind_of"] = [DRUM_KIND_ORDER.index(drum_kind(p)) for p in range(128)]
    return payload


def payload_json(*args, **kwargs) -> str:
    """:func:`encode_payload` serialised without spaces: what the page receives."""
    return json.dumps(encode_payload(*args, **kwargs), separators=(",", ":"), ensure_ascii=False)


def decode_notes(cols: dict[str, list[int]], instruments: Sequence[dict]) -> list[dict]:
    """Inverse of the column encoding (for tests and tools): ``[{"onset", "offset", "pitch",
    "velocity", "instrument"}]`` with times in seconds, in the payload's (sorted) order."""
    out, onset_ms = [], 0
    for dt, dur, pitch, vel, inst in zip(cols["t"], cols["d"], cols["p"], cols["v"], cols["i"]):
        onset_ms += dt
        out.append({"onset": onset_ms / 1000, "offset": (onset_ms + dur) / 1000, "pitch": pitch,
                    "velocity": vel, "instrument": instruments[inst]["name"]})
    return out
