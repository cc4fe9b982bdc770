"""``OUT/tracks.jsonl``: one JSON line per (track, model), appended as each finishes.

The file is the run's memory. Every line is flushed and fsynced before the next track starts, so a
killed run loses at most the tracks in flight; a line cut off by the kill (no newline at its end)
is dropped when the file is next opened. A re-run reads the keys already there and skips them.
When a key appears twice (``--retry-failed`` appends a new result after a failed one), the last
line wins.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

Key = tuple[str, str]  # (track, model)


def line_key(line: dict[str, Any]) -> Key:
    return line["track"], line["model"]


class TrackLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._repair()

    def _repair(self) -> None:
        """Cut a last line left unfinished by a kill, so the next append starts a line of its own."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def lines(self) -> dict[Key, dict[str, Any]]:
        """The complete lines by key, the last one of a key winning (file order otherwise kept)."""
        out: dict[Key, dict[str, Any]] = {}
        if not self.path.is_file():
            return out
        for text in self.path.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(text)
                key = line_key(line)
            except (ValueError, KeyError, TypeError):
                continue  # not one of ours (a hand edit): ignored, never fatal
            out.pop(key, None)
            out[key] = line
        return out

    def append(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
