"""Which recordings and reference MIDI files a dataset folder holds: its layout, its tracks.

Three layouts, tried in this order (the first that has tracks wins):

* ``maestro`` — MAESTRO: a ``maestro-v*.csv`` at the top with ``split``, ``audio_filename`` and
  ``midi_filename`` columns (paths relative to the folder).
* ``slakh`` — Slakh2100: ``TrackNNNNN/mix.flac`` with ``TrackNNNNN/all_src.mid``, either directly
  in the folder or in its split folders (``train``, ``validation``, ``test``, ``omitted``).
* ``pairs`` — any folder: every ``<name>.<wav|flac|mp3|ogg>`` with a ``<name>.mid`` (or ``.midi``)
  beside it, searched recursively.

A track listed by MAESTRO's CSV whose files are missing stays a track: evaluating it records the
failure (the run goes on), so a damaged download shows up in the results instead of shrinking the
test set without a word.
"""
from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..writers import safe_name

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
MIDI_SUFFIXES = (".mid", ".midi")
SLAKH_SPLITS = ("train", "validation", "test", "omitted")
SLAKH_AUDIO, SLAKH_MIDI = "mix.flac", "all_src.mid"
MAESTRO_COLUMNS = ("split", "audio_filename", "midi_filename")


class DatasetError(ValueError):
    """A dataset folder that cannot be evaluated. The message is one sentence for people."""


@dataclass(frozen=True)
class Track:
    """One recording and its reference. ``rel``: the audio's path relative to the dataset folder
    (POSIX separators, the ``"track"`` of each result line); ``name``: a file-name stem for its
    transcription, unique within the dataset."""

    rel: str
    audio: Path
    midi: Path
    name: str = ""


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: str  # "maestro", "slakh" or "pairs"
    split: str | None  # the split chosen (None: every track)
    tracks: tuple[Track, ...]

    def describe(self) -> str:
        """One line for the terminal: which layout, which split, how many tracks."""
        split = f", split {self.split}" if self.split else ""
        n = len(self.tracks)
        return f"{self.root}: {self.layout} layout{split}, {n} track{'' if n == 1 else 's'}"


def track_names(rels: list[str]) -> list[str]:
    """File-name stems from relative paths: the path without its suffix, made safe
    (``a/b.wav`` → ``a_b``). Two paths that give the same stem (``a/b.wav`` and ``a_b.flac``)
    each get a short hash of their own path appended, so no transcription overwrites another."""
    stems = [safe_name(str(Path(rel).with_suffix(""))) for rel in rels]
    counts = Counter(stems)
    return [f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}" if counts[stem] > 1 else stem
            for stem, rel in zip(stems, rels)]


def _tracks(root: Path, pairs: list[tuple[Path, Path]]) -> tuple[Track, ...]:
    rels = [audio.relative_to(root).as_posix() for audio, _ in pairs]
    names = track_names(rels)
    tracks = [Track(rel, audio, midi, name) for rel, (audio, midi), name in zip(rels, pairs, names)]
    return tuple(sorted(tracks, key=lambda t: t.rel))


def _maestro(root: Path, split: str | None) -> Dataset | None:
    csvs = sorted(root.glob("maestro-v*.csv"))
    if not csvs:
        return None
    table = csvs[-1]  # the newest version when several are there
    with table.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MAESTRO_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{table.name} has no {', '.join(missing)} column, so it is not MAESTRO's table.")
        rows = list(reader)
    splits = sorted({r["split"] for r in rows})
    if split is not None and split not in splits:
        raise DatasetError(f"{table.name} has no split {split!r}; it has {', '.join(splits) or 'none'}.")
    chosen = [r for r in rows if split is None or r["split"] == split]
    pairs = [(root / r["audio_filename"], root / r["midi_filename"]) for r in chosen]
    return Dataset(root, "maestro", split, _tracks(root, pairs))


def _slakh_tracks(folder: Path) -> list[tuple[Path, Path]]:
    return [(d / SLAKH_AUDIO, d / SLAKH_MIDI) for d in sorted(folder.glob("Track*"))
            if (d / SLAKH_AUDIO).is_file()]


def _slakh(root: Path, split: str | None) -> Dataset | None:
    splits = [s for s in SLAKH_SPLITS if _slakh_tracks(root / s)]
    top = _slakh_tracks(root)
    if not splits and not top:
        return None
    if split is not None:
        if split not in splits:
            have = ", ".join(splits) if splits else "none (its tracks are directly in the folder)"
            raise DatasetError(f"this Slakh2100 folder has no split {split!r}; split folders: {have}.")
        return Dataset(root, "slakh", split, _tracks(root, _slakh_tracks(root / split)))
    pairs = top + [p for s in splits for p in _slakh_tracks(root / s)]
    return Dataset(root, "slakh", None, _tracks(root, pairs))


def _pairs(root: Path) -> Dataset | None:
    pairs = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        midi = next((audio.with_suffix(s) for s in MIDI_SUFFIXES + tuple(x.upper() for x in MIDI_SUFFIXES)
                     if audio.with_suffix(s).is_file()), None)
        if midi is not None:
            pairs.append((audio, midi))
    return Dataset(root, "pairs", None, _tracks(root, pairs)) if pairs else None


def find_dataset(root: str | Path, split: str | None = None) -> Dataset:
    """The layout of ``root`` and its tracks (of ``split`` when given), sorted by path.

    Raises :class:`DatasetError` when the folder is missing, no layout matches, or the split
    does not exist (``split`` applies to MAESTRO and Slakh2100, whose tracks carry one).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; give the dataset's folder.")
    for find in (_maestro, _slakh):
        dataset = find(root, split)
        if dataset is not None:
            if not dataset.tracks:
                raise DatasetError(f"{root} has the {dataset.layout} layout but no tracks"
                                   + (f" in split {split!r}." if split else "."))
            return dataset
    dataset = _pairs(root)
    if dataset is None:
        raise DatasetError(f"{root} holds no dataset: no maestro-v*.csv (MAESTRO), no Track*/mix.flac "
                           f"(Slakh2100) and no audio file with a .mid of the same name beside it.")
    if split is not None:
        raise DatasetError(f"--split needs a MAESTRO or Slakh2100 folder; {root} is a folder of pairs "
                           f"(audio + MIDI), which has no splits.")
    return dataset
