"""Find checkpoints (local folder first, then the Hugging Face Hub), verify them, open them safely.

Resolution order for a model's file:
1. an explicit path the user gave (CLI ``--checkpoint`` / per-call override): a file, or a folder
   that holds the file;
2. ``$MT3_DEMO_CHECKPOINTS/<model_id>/<filename>`` (or ``$MT3_DEMO_CHECKPOINTS/<filename>``);
3. ``huggingface_hub.hf_hub_download`` at a pinned revision (honours ``HF_HUB_OFFLINE=1``: then only
   the local HF cache is consulted). With ``fetch=False`` (a probe) nothing is fetched: a file
   that would have to be is reported as :class:`NotDownloaded`.
Resolution only looks: it never writes into checkpoint folders or the Hugging Face cache.
Downloaded files are checked against their published sha256. Every failure raises
:class:`CheckpointError` whose message says what is missing and how to provide it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

CHECKPOINTS_ENV = "MT3_DEMO_CHECKPOINTS"


class NotDownloaded(Exception):
    """Raised with ``fetch=False`` when a file would have to be downloaded (it is published, not
    cached): the model manager tells "ready" from "downloads on first use" this way, without
    fetching hundreds of MB."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the model. The message is for people."""


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


def checkpoints_root() -> Path | None:
    root = os.environ.get(CHECKPOINTS_ENV)
    return Path(root).expanduser() if root else None


def local_candidates(model_id: str, basename: str, override: Path | None) -> list[Path]:
    """Where a file may be found locally, in order of preference."""
    out: list[Path] = []
    if override is not None:
        override = Path(override).expanduser()
        out += [override] if override.is_file() else [override / basename, override / model_id / basename]
    root = checkpoints_root()
    if root is not None:
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
                 hub: HubFile | None = None, verify_local: bool = False, fetch: bool = True) -> Path:
    """Return a local path to the file, downloading it from the Hub if needed.

    A user-given path that does not exist is an error (we do not silently fall back to a download).
    """
    if override is not None and not Path(override).expanduser().exists():
        raise CheckpointError(f"{model_id}: checkpoint path {Path(override).name} does not exist.")
    for cand in local_candidates(model_id, basename, override):
        if cand.is_file():
            if verify_local and hub is not None and hub.sha256:
                verify_sha256(cand, hub.sha256)
            return cand
    if override is not None:
        raise CheckpointError(f"{model_id}: no {basename} in {Path(override).name}/.")
    if hub is None:
        raise CheckpointError(f"{model_id}: {basename} not found; {how_to_provide(model_id, None, basename)}.")
    return download(model_id, hub, fetch=fetch)


def download(model_id: str, hub: HubFile, fetch: bool = True) -> Path:
    """hf_hub_download at the pinned revision, then a sha256 check (cached per file)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a requirement
        raise CheckpointError(f"{model_id}: huggingface_hub is not installed ({e}).") from e
    offline = hub_offline()
    if not fetch:  # a probe: the local cache only, never the network
        try:
            cached = hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision,
                                     repo_type=hub.repo_type, local_files_only=True)
            return Path(cached)
        except Exception:
            if offline:
                raise CheckpointError(
                    f"{model_id}: checkpoint {hub.basename} is not available offline (HF_HUB_OFFLINE=1 "
                    f"and not in the local cache). To fix: {how_to_provide(model_id, hub, hub.basename)}.")
            raise NotDownloaded(f"{hub.basename} (~{(hub.size_bytes or 0) / 1e6:.0f} MB) downloads "
                                f"from {hub.repo_id} on first use") from None
    try:
        path = Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision,
                                    repo_type=hub.repo_type, local_files_only=offline))
    except Exception as e:  # network, auth, not found, offline cache miss: all mean "not available"
        reason = "offline mode (HF_HUB_OFFLINE=1) and not in the local cache" if offline else (
            f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise CheckpointError(
            f"{model_id}: checkpoint {hub.basename} unavailable — {reason}. To fix: "
            f"{how_to_provide(model_id, hub, hub.basename)}.") from e
    if hub.sha256:
        verify_sha256(path, hub.sha256)
    return path


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise CheckpointError if the file's sha256 differs. Remembers verified files by size+mtime."""
    path = Path(path)
    stat = path.stat()
    marker = f"{expected}:{stat.st_size}:{int(stat.st_mtime)}"
    stamp = path.with_name(path.name + ".sha256-ok")
    try:
        if stamp.read_text() == marker:
            return
    except OSError:
        pass
    actual = sha256_file(path)
    if actual != expected.lower():
        raise CheckpointError(
            f"checkpoint {path.name} is corrupt or not the published file: sha256 {actual[:16]}… "
            f"!= expected {expected[:16]}…. Delete it and download again.")
    try:
        stamp.write_text(marker)
    except OSError:  # read-only cache: just verify again next time
        pass


# ------------------------------------------------------------------------------------------------
# Safe loading


def safe_torch_load(path: Path, allowed_globals: Iterable[Any] = (), mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU, with a small explicit allow-list.

    Lightning checkpoints pickle a few harmless plain types (e.g. ``argparse.Namespace`` in
    ``hyper_parameters``); adapters pass exactly those. Anything else fails with a clear message
    instead of executing pickled code. ``mmap=True`` (zip-format files only) maps tensors instead of
    reading them, so parts of the file that are never used (optimizer state) stay on disk.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        # torch's message opens with generic advice; the line naming the refused global is the fact.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        culprit = next((ln for ln in lines if "GLOBAL" in ln), None)
        if culprit is None:  # not a refused class: the bytes themselves are not a checkpoint
            detail = next((ln for ln in lines if ln.startswith("Unsupported")), "not a checkpoint")
            raise CheckpointError(f"checkpoint {path.name} could not be read ({detail}); "
                                  "is it truncated or corrupt?") from e
        culprit = culprit.split(" Please use")[0].rstrip(".")
        raise CheckpointError(
            f"checkpoint {path.name} contains objects outside the safe allow-list ({culprit}); "
            "refusing to unpickle arbitrary code.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError) as e:
        # (a legacy-format file of arbitrary bytes fails inside torch with a KeyError)
        raise CheckpointError(f"checkpoint {path.name} could not be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); is it truncated or corrupt?") from e
    if not isinstance(loaded, Mapping):  # a stray pickle of a plain value is not a checkpoint
        raise CheckpointError(f"checkpoint {path.name} is not a PyTorch checkpoint (it holds a "
                              f"{type(loaded).__name__}, not a dictionary of tensors).")
    return loaded


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


def lightning_state_dict(ckpt: Any, what: str) -> dict[str, torch.Tensor]:
    """``ckpt["state_dict"]`` with Lightning's ``model.`` prefix stripped; everything else ignored.

    Also accepts a bare state dict (keys with or without the prefix). Keys outside ``model.`` in a
    prefixed dict are kept as they are, so strict loading reports them.
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
    prefixed = any(k.startswith("model.") for k in sd)
    return {(k[len("model."):] if prefixed and k.startswith("model.") else k): v for k, v in sd.items()}


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


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Check keys/shapes against the module (buffers included) and load."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_state_dict(expected, state_dict, what)
    module.load_state_dict(state_dict, strict=True)
