"""The terminal's progress line: tracks done / total, failures, elapsed time and time left."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """``total`` (track, model) pairs to do in this run (those already in tracks.jsonl excluded).

    On a terminal the line is redrawn in place; into a file or pipe each update is a line of its own.
    The estimate is the pace of this run so far (a model's first track includes its load, so the
    first estimates run high).
    """

    def __init__(self, total: int, stream: TextIO | None = None, skipped: int = 0) -> None:
        self.total, self.skipped = total, skipped
        self.stream = stream if stream is not None else sys.stderr
        self.done = self.failed = 0
        self.started = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self, last: str = "") -> str:
        elapsed = time.perf_counter() - self.started
        text = f"evaluate: {self.done}/{self.total} tracks"
        if self.failed:
            text += f", {self.failed} failed"
        if self.skipped:
            text += f" ({self.skipped} already done)"
        text += f" · {_clock(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f" · ETA {_clock(elapsed / self.done * (self.total - self.done))}"
        return text + (f" · {last}" if last else "")

    def update(self, model_id: str, track: str, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        text = self.line(f"{model_id} {track}" + ("" if ok else " failed"))
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
