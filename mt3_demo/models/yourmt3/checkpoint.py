"""Reading YourMT3's Lightning checkpoints without executing pickled code (spec ymt3.md §11).

The ``.ckpt`` files pickle upstream objects in ``hyper_parameters`` (a ``utils.task_manager.
TaskManager`` with its tokenizer, codec and numpy arrays), so ``torch.load(weights_only=True)`` refuses
them and ``weights_only=False`` would import and run upstream code. Instead we unpickle with a
restricted unpickler: torch's tensor-rebuild functions and a few inert builtins are resolved; every
other global becomes an inert :class:`Opaque` placeholder that only records what it was given. Nothing
from the file is ever called except the allow-listed functions. We need only ``state_dict`` and the
plain-dict configs (``audio_cfg``, ``model_cfg``) from ``hyper_parameters``.
"""
from __future__ import annotations

import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

from ...checkpoints import CheckpointError

_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("_codecs", "encode"),  # protocol-2 pickles store bytes as (latin-1 str, "latin1")
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "bytearray"), ("builtins", "range"),
}


class Opaque:
    """Stand-in for any class or function the file names outside the allow-list. Inert."""

    _global = "?"

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args, self.state, self.items = args, None, []

    def __setstate__(self, state):
        self.state = state

    # containers subclassing list/dict get APPENDS/SETITEMS
    def append(self, x):
        self.items.append(x)

    def extend(self, xs):
        self.items.extend(xs)

    def __setitem__(self, k, v):
        self.items.append((k, v))

    def __repr__(self):
        return f"<opaque {self._global}>"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (Opaque,), {"_global": f"{module}.{name}"})


# torch.load(pickle_module=...) wants a module-like object with ``Unpickler`` and ``load``;
# torch's own subclass of our Unpickler resolves storages and tensor data from the zip archive.
_pickle_module = types.SimpleNamespace(
    __name__="mt3_demo_restricted_pickle", Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, hyper_parameters) of a Lightning ``.ckpt`` (or a bare state dict file).

    Tensors are memory-mapped: optimizer state in the file is never copied into memory.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        try:
            obj = torch.load(path, map_location="cpu", pickle_module=_pickle_module, weights_only=False,
                             mmap=True)
        except RuntimeError as e:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", pickle_module=_pickle_module, weights_only=False)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint {path.name} could not be read ({type(e).__name__}: {first}); "
                              "is it truncated or not a PyTorch checkpoint?") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path.name} holds a {type(obj).__name__}, not a checkpoint dict.")
    sd = obj.get("state_dict", obj)
    hp = obj.get("hyper_parameters") if "state_dict" in obj else None
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path.name}: state_dict entries that are not tensors: "
                              f"{', '.join(map(str, bad[:5]))}.")
    return dict(sd), (hp if isinstance(hp, dict) else {})
