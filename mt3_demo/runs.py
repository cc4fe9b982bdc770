"""Where the web app's per-request files go, and how they stay bounded.

Each request gets a fresh folder (two users' files never collide). Folders live inside Gradio's
upload folder, so the files a request returns are served from where they were written rather
than copied a second time into Gradio's cache. At the start of each run, folders older than
``RUN_TTL_S`` are deleted, then the oldest finished ones until the rest fit in
``Settings.runs_max_mb`` (``$MT3_DEMO_RUNS_MAX_MB``, default 1024): disk use stays under the cap
plus the runs in progress. An upload the app rejects is deleted at once (:func:`discard_upload`).

No Gradio import here: the folder rule is Gradio's documented one (``Settings.upload_dir``, from
``$GRADIO_TEMP_DIR``, else ``<system temp>/gradio``).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from .options import DEFAULT_RUNS_MAX_MB, Settings

log = logging.getLogger(__name__)

RUN_TTL_S = 6 * 3600  # a page may still show a run's files this long after it ran

_active: set[Path] = set()  # run folders whose request is still running: never pruned
_lock = threading.Lock()


def upload_folder(upload_dir: Path | None = None) -> Path:
    """Gradio's cache and upload folder (the same rule Gradio applies; ``Settings.upload_dir``)."""
    return Path(upload_dir or Path(tempfile.gettempdir()) / "gradio").resolve()


def runs_root(upload_dir: Path | None = None) -> Path:
    root = upload_folder(upload_dir) / "mt3-demo-runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def runs_max_bytes(runs_max_mb: float = DEFAULT_RUNS_MAX_MB) -> int:
    """``Settings.runs_max_mb`` in bytes (checked there: a positive number within its range)."""
    return int(Settings(runs_max_mb=runs_max_mb).runs_max_mb * 2**20)


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:  # deleted meanwhile
                pass
    return total


def prune(root: Path | None = None, max_bytes: int | None = None, now: float | None = None) -> list[Path]:
    """Delete expired run folders, then the oldest finished ones until the rest fit in the cap.
    Returns the folders deleted."""
    root = runs_root() if root is None else root
    max_bytes = runs_max_bytes() if max_bytes is None else max_bytes
    now = time.time() if now is None else now
    with _lock:
        active = set(_active)
    runs = []
    for folder in root.iterdir():
        try:
            if folder.is_dir() and not folder.is_symlink() and folder not in active:
                runs.append((folder.stat().st_mtime, folder))
        except OSError:
            pass
    runs.sort()  # oldest first
    sizes = {folder: folder_bytes(folder) for _, folder in runs}
    total = sum(sizes.values()) + sum(folder_bytes(f) for f in active if f.parent == root)
    deleted = []
    for mtime, folder in runs:
        if now - mtime <= RUN_TTL_S and total <= max_bytes:
            break  # the rest are younger and fit
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        deleted.append(folder)
    if deleted:
        log.info("removed %d old run folder(s); runs now take %.1f MB", len(deleted), total / 2**20)
    return deleted


def new_run_dir(settings: Settings = Settings()) -> Path:
    """A fresh folder for one request, after pruning; pass it to :func:`release` when done."""
    root = runs_root(settings.upload_dir)
    prune(root, runs_max_bytes(settings.runs_max_mb))
    folder = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=root))
    with _lock:
        _active.add(folder)
    return folder


def release(folder: Path) -> None:
    """The request that owns ``folder`` has ended: it may be pruned from now on."""
    with _lock:
        _active.discard(Path(folder))


def discard_upload(path: str | os.PathLike | None, upload_dir: Path | None = None) -> bool:
    """Delete an upload the app rejected — only a file inside Gradio's upload folder (never an
    example or any other file) and never a run's output. Returns whether a file was deleted.

    Gradio stores uploads by content hash, so an identical upload still queued would find it gone
    and be rejected as unreadable instead of with the same message: acceptable for a rejected file.
    """
    if not path:
        return False
    file = Path(path).resolve()
    cache = upload_folder(upload_dir)
    runs = cache / "mt3-demo-runs"
    if not file.is_file() or cache not in file.parents or runs in file.parents:
        return False
    try:
        file.unlink()
        if file.parent != cache and not any(file.parent.iterdir()):
            file.parent.rmdir()  # Gradio's per-upload hash folder
    except OSError:
        return False
    return True
