"""Which weights a model would run with here: the published file, the user's own, or test weights.

"Official weights" is claimed only when the file's sha256 is the published one. The hash of a
file is computed once per process (a 500 MB file hashes in about a second) and remembered by path,
size and modification time, in memory only: nothing is written next to the file.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import HubFile

# Tiny checkpoints in the upstream formats (the test fixtures) are kilobytes to a few MB; every
# published file of these models is over 100 MB. Anything this much smaller than the published
# file cannot be a trained model of that architecture.
TEST_WEIGHTS_FRACTION = 0.05

_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Provenance:
    kind: str  # "official", "yours", "test", "embedded"
    file: str = ""  # the file's name (never a server path)

    @property
    def label(self) -> str:
        return {"official": "official weights", "embedded": "weights from its pip package",
                "test": f"test weights: {self.file} (tiny, untrained)",
                "yours": f"your checkpoint: {self.file}"}[self.kind]

    @property
    def short(self) -> str:
        """What a result says about its weights (results.json's "weights", the tables, the cards):
        "official", "official (pip package)", "yours: <file>" or "test: <file>"."""
        return {"official": "official", "embedded": "official (pip package)", "test": f"test: {self.file}",
                "yours": f"yours: {self.file}"}[self.kind]


def sha256_of(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _hashes:
            return _hashes[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    with _lock:
        _hashes[key] = h.hexdigest()
    return _hashes[key]


def location_file(location: object) -> Path | None:
    """The weights file of a resolved location (a path, or an adapter's location dataclass)."""
    if isinstance(location, Path):
        return location if location.is_file() else None
    for attr in ("weights", "path"):
        value = getattr(location, attr, None)
        if isinstance(value, Path) and value.is_file():
            return value
    return None


def provenance(location: object, published: HubFile | None, packaged: bool = True) -> Provenance:
    """What the weights at ``location`` are, compared with the ``published`` file (None: the model
    has no published file to download, its weights come with its package — ``packaged``: this
    location is that package's own, else the user's)."""
    path = location_file(location)
    if published is None:
        if packaged:
            return Provenance("embedded")
        return Provenance("yours", path.name if path else Path(str(location)).name)
    if path is None:
        return Provenance("yours", "?")
    size = path.stat().st_size
    if published.size_bytes and size < TEST_WEIGHTS_FRACTION * published.size_bytes:
        return Provenance("test", path.name)
    if published.sha256 and sha256_of(path) == published.sha256.lower():
        return Provenance("official", path.name)
    return Provenance("yours", path.name)
