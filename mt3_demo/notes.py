"""Notes, transcriptions and the one notes → MIDI path every model shares.

A model adapter produces a list of :class:`Note`; everything downstream (MIDI files, piano rolls,
statistics, metrics, synthesis) reads only that list, so all models are treated identically.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import pretty_midi

from .instruments import instrument_key, instrument_name, note_name

DRUM_CHANNEL = 9  # General MIDI channel 10, zero-based
# Channels available to pitched instruments: 0..15 without the drum channel.
PITCHED_CHANNELS = [c for c in range(16) if c != DRUM_CHANNEL]

@dataclass(frozen=True, order=True)
class Note:
    """One transcribed note. Times in seconds from the start of the clip.

    ``program`` is the General MIDI program (0-127) written to MIDI. ``label`` optionally overrides the
    instrument name shown to people when the GM name would mislead (e.g. YourMT3's singing voice,
    which has no GM program of its own).
    """

    onset: float
    offset: float
    pitch: int
    velocity: int = 100
    program: int = 0
    is_drum: bool = False
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "onset": round(float(self.onset), 6),
            "offset": round(float(self.offset), 6),
            "pitch": int(self.pitch),
            "velocity": int(self.velocity),
            "program": int(self.program),
            "is_drum": bool(self.is_drum),
        }
        if self.label:
            d["label"] = self.label
        return d


@dataclass
class Transcription:
    """What one model heard in one clip, with the timings the UI and CLI report."""

    model_id: str
    notes: list[Note]
    audio_seconds: float
    load_seconds: float = 0.0
    inference_seconds: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    tokens: list | None = None  # raw generated ids per segment (token models only)
    info: dict[str, Any] = field(default_factory=dict)  # model-specific facts, e.g. {"frontend": "tf"}
    weights: str = ""  # which weights ran: provenance.Provenance.short ("official", "test: mt3.pth", ...)
    backend: str = "local"  # where it ran: "local" (this process) or "ray" (a Ray Serve replica)

    @cached_property
    def stats(self) -> dict[str, Any]:
        """:func:`note_stats` of the notes, computed once (the notes are never changed afterwards)."""
        return note_stats(self.notes)

    @property
    def rtf(self) -> float:
        """Real-time factor: inference seconds per second of audio (< 1 is faster than real time)."""
        return self.inference_seconds / self.audio_seconds if self.audio_seconds > 0 else 0.0

    def to_json(self, include_tokens: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model_id,
            "device": self.device,
            "backend": self.backend,
            "dtype": self.dtype,
            "weights": self.weights,
            "audio_seconds": round(self.audio_seconds, 6),
            "timings": {
                "load_s": round(self.load_seconds, 6),
                "inference_s": round(self.inference_seconds, 6),
                "rtf": round(self.rtf, 6),
            },
            "stats": self.stats,
            "notes": [n.to_dict() for n in self.notes],
        }
        out.update({k: v for k, v in self.info.items() if k not in out})
        if include_tokens and self.tokens is not None:
            out["tokens"] = self.tokens
        return out


def note_stats(notes: Iterable[Note]) -> dict[str, Any]:
    """Counts people ask for first: totals, pitched vs drum, per instrument, pitch range."""
    notes = list(notes)
    pitched = [n for n in notes if not n.is_drum]
    per_instrument = Counter(note_name(n) for n in notes)
    return {
        "total": len(notes),
        "pitched": len(pitched),
        "drum": len(notes) - len(pitched),
        "instruments": len(per_instrument),
        "per_instrument": dict(per_instrument.most_common()),
        "pitch_range": (
            [min(n.pitch for n in pitched), max(n.pitch for n in pitched)] if pitched else None
        ),
    }


# ------------------------------------------------------------------------------------------------
# MIDI


def to_midi(notes: Iterable[Note], end_time: float | None = None) -> pretty_midi.PrettyMIDI:
    """One instrument per (program, is_drum, label), GM names, drums on channel 10.

    pretty_midi assigns channels itself when writing: drums on channel 9, pitched instruments on the
    others in order, and wraps around when there are more than 15 pitched instruments. Two instruments
    sharing a channel would fight over its program, so :func:`write_midi` assigns channels itself.
    """
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    by_key: dict[tuple, list[Note]] = defaultdict(list)
    for n in notes:
        by_key[instrument_key(n)].append(n)
    # Stable order: drums last, pitched by program, so channels are deterministic.
    for key in sorted(by_key, key=lambda k: (k[0], k[1], k[2] or "")):
        is_drum, program, label = key
        inst = pretty_midi.Instrument(
            program=0 if is_drum else int(program),
            is_drum=is_drum,
            name=instrument_name(program, is_drum, label),
        )
        for n in sorted(by_key[key], key=lambda n: (n.onset, n.pitch)):
            start = max(0.0, float(n.onset))
            # MIDI cannot hold zero-length notes; drums are onsets, give them 10 ms like MT3.
            end = max(float(n.offset), start + 0.01)
            inst.notes.append(pretty_midi.Note(
                velocity=int(min(127, max(1, n.velocity))), pitch=int(n.pitch), start=start, end=end,
            ))
        midi.instruments.append(inst)
    if end_time is not None and end_time > 0:
        # A final controller event pins the file length to the clip length, so players and the
        # synthesizer line up with the original audio.
        if not midi.instruments:
            midi.instruments.append(pretty_midi.Instrument(program=0, name="(empty)"))
        midi.instruments[0].control_changes.append(
            pretty_midi.ControlChange(number=64, value=0, time=float(end_time)))
    return midi


def assign_channels(midi: pretty_midi.PrettyMIDI) -> list[int]:
    """Channel per instrument: drums on 9; pitched on the 15 others, shared by program when >15."""
    channels = []
    next_free = 0
    program_channel: dict[int, int] = {}
    for inst in midi.instruments:
        if inst.is_drum:
            channels.append(DRUM_CHANNEL)
            continue
        if inst.program in program_channel:  # same program (different label) can share a channel
            channels.append(program_channel[inst.program])
            continue
        if next_free < len(PITCHED_CHANNELS):
            ch = PITCHED_CHANNELS[next_free]
            next_free += 1
        else:
            # More than 15 distinct programs: General MIDI has no room left. Reuse the channel of
            # the last one; its notes will sound with that program, but the track keeps its name.
            ch = PITCHED_CHANNELS[-1]
        program_channel[inst.program] = ch
        channels.append(ch)
    return channels


def write_midi(notes: Iterable[Note], path: str | Path, end_time: float | None = None) -> Path:
    """Write notes as a type-1 MIDI file, one track per instrument, drums on channel 10."""
    import mido

    path = Path(path)
    midi = to_midi(notes, end_time=end_time)
    channels = assign_channels(midi)
    # pretty_midi's own writer picks channels by instrument index and wraps at 16, which can put a
    # pitched instrument on the drum channel; write through mido with our assignment instead.
    tpb = midi.resolution
    mf = mido.MidiFile(type=1, ticks_per_beat=tpb)
    tempo_track = mido.MidiTrack()
    tempo_track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    tempo_track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    tempo_track.append(mido.MetaMessage("end_of_track", time=0))
    mf.tracks.append(tempo_track)
    for inst, ch in zip(midi.instruments, channels):
        shared = channels.count(ch) > 1 and not inst.is_drum
        events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)
        for n in inst.notes:
            on, off = midi.time_to_tick(n.start), midi.time_to_tick(n.end)
            if shared:  # a channel shared by several programs: re-select ours before each note
                events.append((on, 1, mido.Message("program_change", channel=ch, program=inst.program)))
            events.append((on, 2, mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity)))
            events.append((max(off, on + 1), 0, mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))
        for cc in inst.control_changes:
            events.append((midi.time_to_tick(cc.time), 0,
                           mido.Message("control_change", channel=ch, control=cc.number, value=cc.value)))
        events.sort(key=lambda e: (e[0], e[1]))
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=inst.name, time=0))
        if not inst.is_drum:
            track.append(mido.Message("program_change", channel=ch, program=inst.program, time=0))
        last = 0
        for tick, _, msg in events:
            track.append(msg.copy(time=tick - last))
            last = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mf.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    mf.save(str(path))
    return path


def notes_from_midi(path: str | Path) -> list[Note]:
    """Read a (reference) MIDI file into notes."""
    midi = pretty_midi.PrettyMIDI(str(path))
    notes = []
    for inst in midi.instruments:
        for n in inst.notes:
            notes.append(Note(onset=n.start, offset=n.end, pitch=n.pitch, velocity=n.velocity,
                              program=inst.program, is_drum=inst.is_drum))
    notes.sort(key=lambda n: (n.onset, n.pitch))
    return notes
