"""Find checkpoints (local folder first, then the Hugging Face Hub), verify them, open them safely.

Resolution order for a model's file:
1. an explicit path the user gave (CLI ``--checkpoint`` / per-call override): a file, or a folder
   that holds the file;
2. ``<root>/<model_id>/<filename>`` (or ``<root>/<filename>``), root = ``Sources.root``
   (``Settings.checkpoints_root``: ``$MT3_DEMO_CHECKPOINTS``);
3. ``huggingface_hub.hf_hub_download`` at a pinned revision (``Sources.offline``, from
   ``HF_HUB_OFFLINE``: then only the local HF cache is consulted). With ``fetch=False`` (a
   probe) nothing is fetched: a file that would have to be is reported as :class:`NotDownloaded`.
Resolution only looks: it never writes into checkpoint folders or the Hugging Face cache.
Downloaded files (and cached ones, even when only probed) are checked against their published
sha256, and checked again by :func:`safe_torch_load` right before their bytes are read: the hash is
kept in memory for this process only, never in a file. Files the user places (an explicit path,
``$MT3_DEMO_CHECKPOINTS``) are trusted as they are, but every load is still safe (``weights_only``)
and checked (:func:`check_tensors`). Every failure raises :class:`CheckpointError` whose message
says what is missing (``reason``) and how to provide it (``fix``).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap as mmap_module
import os
import pickle
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from .options import CHECKPOINTS_ENV, OFFLINE_ENV


@dataclass(frozen=True)
class Sources:
    """Where checkpoints come from besides an explicit path (``Settings`` gives both)."""

    root: Path | None = None  # checkpoints placed by hand: <root>/<model_id>/<file>
    offline: bool = False  # never ask the Hub; its local cache only


class NotDownloaded(Exception):
    """Raised with ``fetch=False`` when a file would have to be downloaded (it is published, not
    cached): the model manager tells "ready" from "downloads on first use" this way, without
    fetching hundreds of MB. ``hub`` is the file (its size is the one the UI quotes), ``fix`` how
    to provide it by hand."""

    def __init__(self, message: str, hub: "HubFile | None" = None, fix: str = "") -> None:
        super().__init__(message)
        self.hub, self.fix = hub, fix


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the model. ``reason`` says what is wrong
    (for people, may start with "<model_id>: "), ``fix`` how to make it work ("" when there is no
    more to say); the message is both."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason + (f" To fix: {fix}" if fix else ""))
        self.reason, self.fix = reason, fix


@dataclass(frozen=True)
class HubFile:
    """One published checkpoint file, pinned."""

    repo_id: str
    filename: str  # path inside the repo
    revision: str = "main"  # a commit sha where known
    sha256: str | None = None
    size_bytes: int | None = None
    repo_type: str = "model"  # "model" or "space"

    @property
    def basename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        prefix = "spaces/" if self.repo_type == "space" else ""
        return f"https://huggingface.co/{prefix}{self.repo_id}/blob/{self.revision}/{self.filename}"


def local_candidates(model_id: str, basename: str, override: Path | None, root: Path | None = None) -> list[Path]:
    """Where a file may be found locally, in order of preference (``root``: ``Sources.root``)."""
    out: list[Path] = []
    if override is not None:
        override = Path(override).expanduser()
        out += [override] if override.is_file() else [override / basename, override / model_id / basename]
    if root is not None:
        root = Path(root).expanduser()
        out += [root / model_id / basename, root / basename]
    return out


def how_to_provide(model_id: str, hub: HubFile | None, basename: str) -> str:
    where = f"${CHECKPOINTS_ENV}/{model_id}/{basename}"
    text = f"put the file at {where} (or pass --checkpoint PATH)"
    if hub is not None:
        text += (f"; it is published at {hub.url}"
                 + (f" (sha256 {hub.sha256[:12]}…)" if hub.sha256 else ""))
        text += "; with internet access and HF_HUB_OFFLINE unset it is downloaded automatically"
    return text


def resolve_file(model_id: str, basename: str, override: Path | None = None,
                 hub: HubFile | None = None, verify_local: bool = False, fetch: bool = True,
                 sources: Sources = Sources()) -> Path:
    """Return a local path to the file, downloading it from the Hub if needed.

    A user-given path that does not exist is an error (we do not silently fall back to a download).
    """
    if override is not None and not Path(override).expanduser().exists():
        raise CheckpointError(f"{model_id}: checkpoint path {Path(override).name} does not exist.",
                              "check the path (a file, or a folder holding the checkpoint).")
    for cand in local_candidates(model_id, basename, override, sources.root):
        if cand.is_file():
            if verify_local and hub is not None and hub.sha256:
                verify_sha256(cand, hub.sha256)
            return cand
    if override is not None:
        raise CheckpointError(f"{model_id}: no {basename} in {Path(override).name}/.",
                              f"put {basename} in that folder, or give the file itself.")
    if hub is None:
        raise CheckpointError(f"{model_id}: {basename} not found.", how_to_provide(model_id, None, basename) + ".")
    return download(model_id, hub, fetch=fetch, offline=sources.offline)


def download(model_id: str, hub: HubFile, fetch: bool = True, offline: bool = False) -> Path:
    """hf_hub_download at the pinned revision, then a sha256 check (cached per file)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a requirement
        raise CheckpointError(f"{model_id}: huggingface_hub is not installed ({e}).") from e
    if not fetch:  # a probe: the local cache only, never the network
        try:
            cached = Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision,
                                          repo_type=hub.repo_type, local_files_only=True))
        except Exception:
            # Offline or not, the file is not here: whether it can be fetched is the caller's
            # question (the manager asks mt3_demo.hub once), not something to find out by trying.
            size = f" (~{hub.size_bytes / 1e6:.0f} MB)" if hub.size_bytes else ""
            raise NotDownloaded(f"{hub.basename}{size} downloads from {hub.repo_id} on first use", hub,
                                how_to_provide(model_id, hub, hub.basename)) from None
        if hub.sha256:  # "ready" means verified: hashed once per process, remembered in memory
            verify_sha256(cached, hub.sha256)
        return cached
    try:
        path = Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision,
                                    repo_type=hub.repo_type, local_files_only=offline))
    except Exception as e:  # network, auth, not found, offline cache miss: all mean "not available"
        reason = f"offline mode ({OFFLINE_ENV}=1) and not in the local cache" if offline else (
            f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise CheckpointError(f"{model_id}: checkpoint {hub.basename} unavailable — {reason}.",
                              f"{how_to_provide(model_id, hub, hub.basename)}.") from e
    if hub.sha256:
        verify_sha256(path, hub.sha256)
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# sha256 pins. Trust lives in this process's memory only (never in a file beside the checkpoint):
# a file's bytes are hashed once per process per identity — device, inode, size, mtime and ctime in
# nanoseconds. ctime is set by the kernel on every write or utime() and cannot be set back by a
# user, so an in-place change that restores size and mtime still gets a new identity and a new hash.
_hashed: dict[tuple, str] = {}  # file identity -> sha256 of its bytes
# Path -> published sha256, for every file verified against one, under both the path it was
# verified by and the file that path led to: re-pointing a symlink (the Hub cache's snapshot links)
# does not make a pinned path unpinned.
_pinned: dict[str, str] = {}
_hash_lock = threading.Lock()


def _identity(fd: int) -> tuple:
    """What must stay the same for a hash of an open file's bytes to stay valid."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash_open(f: Any, name: str) -> tuple[tuple, str]:
    """(identity, sha256) of the bytes of the open file ``f``, hashed from this descriptor (at most
    once per identity); the file is left at its start."""
    with _hash_lock:  # one hash of a big file at a time, and never the same one twice
        ident = _identity(f.fileno())
        actual = _hashed.get(ident)
        if actual is None:
            f.seek(0)
            h = hashlib.sha256()
            while block := f.read(1 << 22):
                h.update(block)
            if _identity(f.fileno()) != ident:
                raise CheckpointError(f"checkpoint {name} changed while it was being verified.",
                                      "leave the file alone while the app loads it, then try again.")
            actual = _hashed[ident] = h.hexdigest()
    f.seek(0)
    return ident, actual


def _check_hash(name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {name} is corrupt or not the published file: sha256 {actual[:16]}… "
            f"!= expected {expected[:16]}….", "delete it and download it again.")


def verify_sha256(path: Path, expected: str) -> tuple:
    """Raise CheckpointError unless the file's bytes hash to ``expected``; return the identity of
    the file that was verified.

    Hashes at most once per process per file identity (500 MB take about a second) and remembers
    the pin, so :func:`safe_torch_load` hashes the bytes it reads against it again.
    """
    path, expected = Path(path), expected.lower()
    try:
        with open(path, "rb") as f:
            ident, actual = _hash_open(f, path.name)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path.name} could not be read for verification "
                              f"({type(e).__name__}).") from e
    _pinned[os.path.abspath(path)] = _pinned[os.path.realpath(path)] = expected
    _check_hash(path.name, actual, expected)
    return ident


def pinned_sha256(path: Path) -> str | None:
    """The published sha256 this path (or the file it leads to) was verified against in this
    process, if any."""
    return _pinned.get(os.path.abspath(path)) or _pinned.get(os.path.realpath(path))


def _reopenable(fd: int) -> str | None:
    """A path that opens the very file behind descriptor ``fd`` (not whatever its name leads to
    now), for readers that take only a path (``torch.load(mmap=True)``); None where there is none."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        candidate = f"{folder}/{fd}"
        if os.path.exists(candidate):
            return candidate
    return None


# ------------------------------------------------------------------------------------------------
# Safe loading


def safe_torch_load(path: Path, allowed_globals: Iterable[Any] = (), mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU, with a small explicit allow-list.

    Lightning checkpoints pickle a few harmless plain types (e.g. ``argparse.Namespace`` in
    ``hyper_parameters``); adapters pass exactly those. Anything else fails with a clear message
    instead of executing pickled code. ``mmap=True`` (zip-format files only) maps tensors instead of
    reading them, so parts of the file that are never used (optimizer state) stay on disk.

    The file is opened once: a pinned file (:func:`pinned_sha256`) is hashed from that descriptor
    and read from it, so the bytes loaded are the bytes verified, whatever its name leads to
    meanwhile; a change of the open file while it is read is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.name} does not exist.")
    expected = pinned_sha256(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"checkpoint {path.name} could not be opened ({_first_line(e)}).") from e
    with f:
        if expected is not None:  # a published file: the bytes read now must be the ones verified
            before, actual = _hash_open(f, path.name)
            _check_hash(path.name, actual, expected)
        source = _reopenable(f.fileno()) if mmap else None
        loaded = _torch_load(source or f, path.name, allowed_globals, mmap=source is not None)
        if expected is not None and _identity(f.fileno()) != before:
            raise CheckpointError(f"checkpoint {path.name} changed while it was being read.", "load it again.")
    if not isinstance(loaded, Mapping):  # a stray pickle of a plain value is not a checkpoint
        raise CheckpointError(f"checkpoint {path.name} is not a PyTorch checkpoint (it holds a "
                              f"{type(loaded).__name__}, not a dictionary of tensors).")
    return loaded


def _torch_load(source: Any, name: str, allowed_globals: Iterable[Any], mmap: bool) -> Any:
    """``torch.load`` of an open file (or a path to one) with the refusals turned into
    :class:`CheckpointError` s that say why."""
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's message opens with generic advice; the line naming the refused global is the fact.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        culprit = next((ln for ln in lines if "GLOBAL" in ln), None)
        if culprit is None:  # not a refused class: the bytes themselves are not a checkpoint
            detail = next((ln for ln in lines if ln.startswith("Unsupported")), "not a checkpoint")
            raise CheckpointError(f"checkpoint {name} could not be read ({detail}); "
                                  "is it truncated or corrupt?") from e
        culprit = culprit.split(" Please use")[0].rstrip(".")
        raise CheckpointError(
            f"checkpoint {name} contains objects outside the safe allow-list ({culprit}); "
            "refusing to unpickle arbitrary code.") from e
    except Exception as e:  # noqa: BLE001 - arbitrary bytes fail inside torch's unpickler in any way
        # (KeyError, IndexError, ValueError, …): whatever it is, the file is not a readable checkpoint
        raise CheckpointError(f"checkpoint {name} could not be read ({_first_line(e)}); "
                              "is it truncated or corrupt?") from e


class InertObject:
    """Stand-in for a class a checkpoint pickles outside its tensors (Lightning loop or callback
    state, upstream config objects such as YourMT3's ``TaskManager``): it remembers which global it
    replaces (``_global``) and runs nothing. Only plain containers and tensors are ever used."""

    _global = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert {self._global}>"


def _inert(qualname: str) -> tuple[type, str]:
    return type(f"Inert[{qualname}]", (InertObject,), {"_global": qualname}), qualname


def read_checkpoint(path: Path, mmap: bool | None = None) -> Any:
    """``torch.load(weights_only=True)`` of a (Lightning) checkpoint, never executing pickled code.

    When the file pickles classes outside the tensors, their names are listed from the pickle
    without loading it and torch's restricted unpickler runs again with an inert stand-in for
    exactly those (:class:`InertObject`) — never ``weights_only=False``. Modules torch refuses
    outright (``os``, ``subprocess``, …) still fail. ``mmap`` (default: any zip-format file) maps
    the tensors instead of reading them, so optimizer state in the file is never paged in.
    """
    path = Path(path)
    if mmap is None:
        mmap = zipfile.is_zipfile(path)
    try:
        return safe_torch_load(path, mmap=mmap)
    except CheckpointError as e:
        if not isinstance(e.__cause__, pickle.UnpicklingError):
            raise
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # not a zip checkpoint: nothing more can be done safely
            raise e from None
        if not names:
            raise
        return safe_torch_load(path, [_inert(n) for n in names], mmap=mmap)


def read_lightning_checkpoint(path: Path, what: str, mmap: bool | None = None) -> tuple[dict[str, torch.Tensor], Any]:
    """(:func:`lightning_state_dict` of the file, the whole checkpoint object) — the weights in
    memory of their own, copied out of the mapped file (:func:`copy_out_of_mapping`)."""
    path = Path(path)
    mapped = zipfile.is_zipfile(path) if mmap is None else mmap
    ckpt = read_checkpoint(path, mapped)
    return lightning_state_dict(ckpt, what, mapped=mapped), ckpt


def lightning_state_dict(ckpt: Any, what: str, mapped: bool = False) -> dict[str, torch.Tensor]:
    """``ckpt["state_dict"]`` with Lightning's ``model.`` prefix stripped; everything else ignored.

    Also accepts a bare state dict (keys with or without the prefix). Keys outside ``model.`` in a
    prefixed dict are kept as they are, so strict loading reports them. ``mapped``: ``ckpt`` was
    read with ``mmap=True``; its weights are then copied out of the file (:func:`copy_out_of_mapping`).
    """
    if isinstance(ckpt, Mapping) and "state_dict" in ckpt:
        sd = ckpt["state_dict"]
    elif isinstance(ckpt, Mapping) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt
    else:
        keys = ", ".join(map(str, list(ckpt)[:8])) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{what} is not a Lightning checkpoint: no 'state_dict' (found {keys}).")
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in sd.items()):
        raise CheckpointError(f"{what}: 'state_dict' is not a mapping of names to tensors.")
    check_tensors(sd, what)
    if mapped:
        sd = copy_out_of_mapping(sd)
    prefixed = any(k.startswith("model.") for k in sd)
    return {(k[len("model."):] if prefixed and k.startswith("model.") else k): v for k, v in sd.items()}


def _libc_madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


_madvise = _libc_madvise()


def release_mapped_pages(t: torch.Tensor) -> None:
    """Hand the pages of a memory-mapped file that hold ``t``'s storage back to the kernel
    (``madvise(MADV_DONTNEED)``; Linux only, elsewhere a no-op). The mapping is private and never
    written, so nothing is lost: a page read again comes back from the page cache. Only for memory
    known to be a file mapping: on ordinary memory the same call would zero it.
    """
    if _madvise is None:
        return
    storage = t.untyped_storage()
    page = mmap_module.PAGESIZE
    start = -(-storage.data_ptr() // page) * page  # whole pages only: the first and last may hold
    end = (storage.data_ptr() + storage.nbytes()) // page * page  # a neighbour not yet copied
    if end > start:
        _madvise(start, end - start, mmap_module.MADV_DONTNEED)  # a refusal only costs memory


def copy_out_of_mapping(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor of a ``torch.load(mmap=True)`` state dict copied into memory of its own (contiguous),
    and the file's pages it was read from released right after its copy.

    A mapped tensor is a window on one mapping of the whole file (optimizer state included): kept
    as a model's weight, it would keep the file mapped and read whatever the file holds later, not
    the bytes that were checked. Copying alone would hold every weight twice by the end of the load
    (the copies + the file's pages read into this process); releasing each tensor's pages after its
    copy keeps the load at one copy plus one tensor. A tensor under several keys is copied once.
    """
    copies: dict[tuple, torch.Tensor] = {}
    out = {}
    for key, t in state_dict.items():
        ident = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if ident not in copies:
            copies[ident] = t.clone(memory_format=torch.contiguous_format)
            release_mapped_pages(t)
        out[key] = copies[ident]
    return out


def assignable(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors as ``module.load_state_dict(..., assign=True)`` must receive them: each in the dtype of
    the module's tensor of that name (what a copy into it would convert to: float32 weights stay
    float32, BatchNorm's counter stays int64), contiguous, and alone in its storage — a view of a
    bigger tensor (a fused weight saved whole) would keep all of it alive as a parameter. A tensor
    that already is all that is taken as it is: no copy. Keys must match (check them first).
    """
    own = module.state_dict()
    out = {}
    for key, t in state_dict.items():
        t = t.to(own[key].dtype)
        if not t.is_contiguous() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone(memory_format=torch.contiguous_format)
        out[key] = t
    return out


def _first_line(e: BaseException) -> str:
    """The error's kind and first line, for a message to people (an OSError's text would name the
    file by its full path: only its reason is kept)."""
    text = (e.strerror or "") if isinstance(e, OSError) else str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


INTEGER_TENSORS = ("num_batches_tracked",)  # BatchNorm's step counter: the one integer in a model


def check_tensors(state_dict: Mapping[str, Any], what: str) -> None:
    """Refuse tensors no trained model holds: not a tensor, empty, not floating point, NaN or ±inf.

    Run on every state dict before a model is sized or loaded from it (every adapter does), so a
    damaged or converted file is named as such instead of failing later as an IndexError, loading
    integers silently into float weights (0 notes), or a NaN showing up as "tensors differ".
    """
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{what}: {name} is a {type(t).__name__}, not a tensor.")
        if name.rsplit(".", 1)[-1] in INTEGER_TENSORS:
            continue
        if t.numel() == 0:
            raise CheckpointError(f"{what}: tensor {name} is empty (shape {tuple(t.shape)}).")
        if not t.is_floating_point():
            raise CheckpointError(f"{what}: tensor {name} holds {str(t.dtype).replace('torch.', '')} "
                                  "values; model weights are floating point (was the file converted?).")
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int(finite.numel() - finite.sum())
            raise CheckpointError(f"{what}: tensor {name} holds {bad} of {t.numel()} values that are NaN "
                                  "or infinite; the file is damaged or from a diverged training run.")


@contextlib.contextmanager
def checkpoint_errors(what: str):
    """Sizing and loading a model from a checkpoint's tensors: what goes wrong is the file's fault.

    Turns the structural errors a malformed state dict causes there (a 1-D tensor where a matrix
    belongs, a missing entry, a wrong type) into a :class:`CheckpointError` that names the file.
    Wrap only the CPU-side load, never inference or the move to a device.
    """
    try:
        yield
    except CheckpointError:
        raise
    except (IndexError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{what} does not fit the model ({_first_line(e)}).") from e


def check_state_dict(expected: Mapping[str, tuple[int, ...]], state_dict: Mapping[str, torch.Tensor],
                     what: str, max_listed: int = 8) -> None:
    """Strict key and shape check with a readable message: missing, unexpected and mis-shaped keys."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}"
             for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return

    def listing(items: list[str]) -> str:
        more = f", … (+{len(items) - max_listed} more)" if len(items) > max_listed else ""
        return ", ".join(items[:max_listed]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {listing(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es): {listing(wrong)}")
    raise CheckpointError(f"{what} does not match the model — " + "; ".join(parts) + ".")


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Turns every ``torch.nn.init`` call into a no-op (returns the tensor as it is)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def empty_weights():
    """Build modules on the meta device without their random initialisation, for
    ``load_state_dict(assign=True)`` to fill with a checkpoint's tensors (one copy of the weights).

    Skipping the init is not only saved work: run on meta tensors, ``torch.nn.init``'s random fills
    import sympy, which stays in the process (+110 MB RSS measured with torch 2.9). The mode is
    thread-local: models built elsewhere at the same time are untouched.
    """
    with torch.device("meta"), _SkipInit():
        yield


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Check keys/shapes against the module (buffers included) and load."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_state_dict(expected, state_dict, what)
    module.load_state_dict(state_dict, strict=True)
