"""The model manager: a registry of adapters, loaded lazily, once, kept warm, unloaded when memory runs short.

* Lazy: nothing is loaded until a model is first asked for (or ``preload`` for eager hosts such as
  ZeroGPU Spaces, where ``SPACES_ZERO_GPU`` is set).
* Once: a per-model lock makes two simultaneous requests share a single load.
* Warm: loaded models stay in memory, most recently used last.
* Bounded: before a load, least-recently-used idle models are unloaded until the new one fits the
  budget (``MT3_DEMO_MEMORY_BUDGET_MB``, default half the free RAM or 80 % of the GPU); on CPU
  the budget also holds each run in progress at its measured need (``mt3_demo.memory``).
* One resolution: :meth:`ModelManager.resolve` finds a model's checkpoint once per load and hands
  the location to the adapter's ``build``; :meth:`availability` resolves with ``fetch=False``,
  which downloads and writes nothing.
* Honest about time: load time is measured and reported apart from inference time.
"""
from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import allocator, hub
from .audio import Clip
from .checkpoints import CheckpointError, NotDownloaded
from .memory import run_mb
from .models.base import ModelSpec, ProgressFn, Transcriber
from .notes import Transcription
from .options import DEVICE_ENV, OptionError, Settings, settings_from_env
from .provenance import provenance
from .threads import thread_policy

log = logging.getLogger(__name__)

# Adapter modules, in the order the UI lists them. Each exposes SPEC (a package: in its adapter.py).
ADAPTER_MODULES = [
    "mt3_demo.models.transkun",
    "mt3_demo.models.mt3",
    "mt3_demo.models.mr_mt3",
    "mt3_demo.models.yourmt3",
]
DEFAULT_MODEL = "transkun"


class UnknownModel(OptionError):
    """A model id that is not in the registry (a usage error: the CLI exits with 2)."""


class BackendError(RuntimeError):
    """The backend that runs the models could not run this request (a Ray replica died, its queue
    is full, the cluster went away). The message is one sentence for people, with what to do."""


def load_registry() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """Import every adapter. Returns (specs by id, import errors by module) — a broken adapter
    must not take the app down, it shows as unavailable."""
    specs: dict[str, ModelSpec] = {}
    errors: dict[str, str] = {}
    for name in ADAPTER_MODULES:
        try:
            module = importlib.import_module(name)
            if not hasattr(module, "SPEC"):  # a model package keeps its SPEC in adapter.py
                module = importlib.import_module(name + ".adapter")
            spec = module.SPEC
            specs[spec.id] = spec
        except Exception as e:  # noqa: BLE001 - reported, not raised
            errors[name] = f"{type(e).__name__}: {e}"
            log.warning("adapter %s failed to import: %s", name, e)
    return specs, errors


def parse_device(wanted: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` that exists here, else :class:`OptionError` saying why."""
    try:
        device = torch.device(wanted)
    except RuntimeError:
        raise OptionError(f"device {wanted!r} is not a device; use cpu, cuda or cuda:N.") from None
    if device.type not in ("cpu", "cuda"):
        raise OptionError(f"device {wanted!r} is not supported; use cpu, cuda or cuda:N.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {wanted!r} was requested but CUDA is not available on this machine.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise OptionError(f"device {wanted!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def default_device(wanted: str | None = None) -> torch.device:
    """``wanted`` (from ``Settings.device``: ``MT3_DEMO_DEVICE``) when usable, else CUDA when
    present, else CPU. An unusable setting is logged and ignored: it must not keep the app from
    starting (the CLI checks ``--device`` with :func:`parse_device` and stops instead)."""
    if wanted:
        try:
            return parse_device(wanted)
        except OptionError as e:
            log.warning("%s: %s Using the default device.", DEVICE_ENV, e)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_budget_mb(device: torch.device) -> float:
    """Half the free RAM, or 80 % of the GPU (``Settings.memory_budget_mb`` overrides)."""
    if device.type == "cuda":
        return 0.8 * torch.cuda.get_device_properties(device).total_memory / 2**20
    import psutil

    return 0.5 * psutil.virtual_memory().available / 2**20


@dataclass
class Availability:
    """What the UI shows next to a model's checkbox.

    ``reason`` is one short sentence (why it cannot run, or what will be downloaded), ``fix`` how to
    make it run (shown behind a "details" toggle), ``weights`` which weights would run (ready models:
    "official weights", "your checkpoint: <file>", "test weights: <file> …"), ``download_mb`` the
    published file's size for a model fetched on first use.
    """

    status: str  # "ready" (files here), "download" (fetched on first use), "unavailable"
    reason: str = ""
    fix: str = ""
    weights: str = ""
    download_mb: float | None = None

    @property
    def usable(self) -> bool:
        return self.status in ("ready", "download")


def split_fix(message: str, model_id: str = "") -> tuple[str, str]:
    """A checkpoint message ("<what is wrong>. To fix: <how>") as (one sentence, the fix)."""
    text = message.strip()
    if model_id and text.startswith(model_id + ": "):
        text = text[len(model_id) + 2:]
    head, _, fix = text.partition(" To fix: ")
    if not fix and ". " in head:  # no "To fix": the first sentence, the rest as details
        head, _, fix = head.partition(". ")
    head = head.rstrip(". ")
    head += "" if head.endswith(("?", "!")) else "."
    return head[:1].upper() + head[1:], fix.strip()


def default_selection(model_ids: list[str], avail: dict[str, Availability]) -> list[str]:
    """The models a page starts with: the MT3-family ones that are ready, then the embedded
    default; the default alone when none is (every manager's rule)."""
    ready = [m for m in model_ids if m != DEFAULT_MODEL and avail[m].status == "ready"]
    return ready + [DEFAULT_MODEL] if ready else [DEFAULT_MODEL]


@dataclass
class _Loaded:
    transcriber: Transcriber
    options_key: tuple
    load_seconds: float
    weights_mb: float
    in_use: int = 0


@dataclass
class ModelManager:
    """``options`` maps a model id to its options dataclass (``mt3_demo.options``); a model without
    an entry runs with its defaults."""

    device: torch.device = field(default_factory=default_device)
    checkpoints: dict[str, Path] = field(default_factory=dict)  # per-model user override
    options: dict[str, Any] = field(default_factory=dict)  # model id -> its options dataclass
    budget_mb: float | None = None

    def __post_init__(self) -> None:
        self.specs, self.import_errors = load_registry()
        if self.budget_mb is None:
            self.budget_mb = default_budget_mb(self.device)
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()  # LRU: most recent last
        self._state_lock = threading.Lock()  # guards _loaded and _model_locks
        self._model_locks: dict[str, threading.Lock] = {}
        self.load_count: dict[str, int] = {}  # how many times each model was built (tests, logs)
        self._running_mb = 0.0  # measured memory of the runs in progress (memory.run_mb), budgeted

    # ------------------------------------------------------------------ registry

    def model_ids(self) -> list[str]:
        return list(self.specs)

    def spec(self, model_id: str) -> ModelSpec:
        try:
            return self.specs[model_id]
        except KeyError:
            known = ", ".join(self.specs) or "none"
            raise UnknownModel(f"Unknown model '{model_id}'. Known models: {known}.") from None

    def options_for(self, model_id: str) -> Any:
        """The model's options: the ones given for it, else its defaults."""
        options = self.options.get(model_id)
        return options if options is not None else self.spec(model_id).options_type()

    def resolve(self, model_id: str, fetch: bool = True) -> Any:
        """The one resolution of a model's checkpoint (override, options, ``fetch`` as in ModelSpec)."""
        return self.spec(model_id).resolve(self.checkpoints.get(model_id), self.options_for(model_id), fetch)

    def availability(self, model_id: str) -> Availability:
        """Are the weights here (and which), downloadable now, or missing (with the fix)?

        Writes and downloads nothing. A file that would have to be downloaded counts as
        unavailable unless the Hub is reachable (:mod:`mt3_demo.hub`: asked once, remembered).
        """
        spec = self.spec(model_id)
        try:
            location = self.resolve(model_id, fetch=False)
        except NotDownloaded as e:
            size = e.hub.size_bytes / 1e6 if e.hub is not None and e.hub.size_bytes else None
            reachable, why = hub.status()
            if reachable:
                return Availability("download", str(e), e.fix, download_mb=size)
            return Availability("unavailable", f"Weights not on this machine; {why}.", e.fix)
        except CheckpointError as e:
            reason, fix = split_fix(str(e), model_id)
            return Availability("unavailable", reason, fix)
        except Exception as e:  # noqa: BLE001 - any adapter bug shows as unavailable
            return Availability("unavailable", f"Its adapter failed to resolve the weights ({type(e).__name__}).",
                                str(e))
        try:
            weights = provenance(location, spec.published(location, self.options_for(model_id))).label
        except OSError as e:
            return Availability("unavailable", f"Its weights file cannot be read ({type(e).__name__}).", str(e))
        return Availability("ready", "weights found locally", weights=weights)

    def availabilities(self) -> dict[str, Availability]:
        """Every model's availability, resolved once: what one page (re)load shows everywhere."""
        return {model_id: self.availability(model_id) for model_id in self.specs}

    def default_selection(self, avail: dict[str, Availability] | None = None) -> list[str]:
        """MT3-family models whose weights are here; the embedded default when there are none.
        ``avail``: a snapshot from :meth:`availabilities` (resolved now when not given)."""
        return default_selection(list(self.specs), avail if avail is not None else self.availabilities())

    # ------------------------------------------------------------------ loading

    def _lock_for(self, model_id: str) -> threading.Lock:
        with self._state_lock:
            return self._model_locks.setdefault(model_id, threading.Lock())

    def _options_key(self, model_id: str) -> tuple:
        return (str(self.checkpoints.get(model_id)), self.options_for(model_id))

    def loaded_ids(self) -> list[str]:
        with self._state_lock:
            return list(self._loaded)

    def get(self, model_id: str) -> tuple[Transcriber, float]:
        """The loaded model and the seconds this call spent loading it (0.0 when it was warm)."""
        entry, seconds = self._acquire(model_id, hold=False)
        return entry.transcriber, seconds

    def _acquire(self, model_id: str, hold: bool) -> tuple[_Loaded, float]:
        """Load if needed; with ``hold`` the model is marked busy (never unloaded) until released.

        Marking happens under the same lock that hands the model out, so no other request can unload
        it between loading and use.
        """
        spec = self.spec(model_id)
        key = self._options_key(model_id)
        with self._lock_for(model_id):
            with self._state_lock:
                entry = self._loaded.get(model_id)
                if entry is not None and entry.options_key == key:
                    self._loaded.move_to_end(model_id)
                    entry.in_use += hold
                    return entry, 0.0
            if entry is not None:  # options changed: rebuild
                self.unload(model_id)
            self._make_room(spec.size_mb)
            start = time.perf_counter()
            location = self.resolve(model_id)
            transcriber = spec.build(location, self.device, self.options_for(model_id))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            weights_mb = _weights_mb(transcriber) or spec.size_mb
            entry = _Loaded(transcriber, key, seconds, weights_mb, in_use=int(hold))
            with self._state_lock:
                self._loaded[model_id] = entry
                self.load_count[model_id] = self.load_count.get(model_id, 0) + 1
            log.info("loaded %s on %s in %.2f s (%.0f MB)", model_id, self.device, seconds, weights_mb)
            return entry, seconds

    def _make_room(self, needed_mb: float) -> None:
        """Unload least-recently-used idle models until ``needed_mb`` more fits in the budget
        (which holds the loaded weights and the runs in progress)."""
        while True:
            with self._state_lock:
                used = sum(e.weights_mb for e in self._loaded.values()) + self._running_mb
                if used + needed_mb <= self.budget_mb:
                    return
                victim = next((m for m, e in self._loaded.items() if e.in_use == 0), None)
            if victim is None:
                return  # everything loaded is busy; load anyway rather than fail a request
            log.info("memory budget %.0f MB: unloading %s", self.budget_mb, victim)
            self.unload(victim)

    def unload(self, model_id: str) -> bool:
        with self._state_lock:
            entry = self._loaded.pop(model_id, None)
        if entry is None:
            return False
        del entry
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True

    def unload_idle(self) -> None:
        """Free every model no request is using (after running out of memory)."""
        with self._state_lock:
            idle = [m for m, e in self._loaded.items() if e.in_use == 0]
        for model_id in idle:
            self.unload(model_id)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def preload(self, model_ids: list[str] | None = None) -> dict[str, str]:
        """Eager mode: load every usable model now. Returns errors by model id."""
        errors = {}
        for model_id in model_ids or self.model_ids():
            if not self.availability(model_id).usable:
                continue
            try:
                self.get(model_id)
            except Exception as e:  # noqa: BLE001 - reported per model
                errors[model_id] = str(e)
        return errors

    # ------------------------------------------------------------------ inference

    def transcribe(self, model_id: str, clip: Clip, progress: ProgressFn | None = None,
                   on_loaded: Callable[[Transcriber], None] | None = None,
                   on_wait: Callable[[str], None] | None = None) -> Transcription:
        """Load if needed, transcribe, time both. Raises CheckpointError / adapter errors.

        ``on_loaded(transcriber)`` is called once the weights are in memory, before inference
        (progress reports switch from "loading" to the model's own phases there). ``on_wait(phrase)``
        is the hook of managers with a queue in front of the model (:class:`mt3_demo.remote.RayManager`
        says "waiting for a free … replica" through it); nothing queues here, so it is not called."""
        entry, load_seconds = self._acquire(model_id, hold=True)
        transcriber = entry.transcriber
        # Admission: a run needs its measured memory next to the weights (transkun: ~1.2 GB for a
        # 54 MB model); idle models make room for it. Measured on CPU (RSS): not applied to GPUs.
        run_need_mb = run_mb(model_id, clip.duration) if self.device.type == "cpu" else 0.0
        counted = 0.0
        try:
            self._make_room(run_need_mb)
            with self._state_lock:
                self._running_mb += run_need_mb
                counted = run_need_mb
            if on_loaded is not None:
                on_loaded(transcriber)
            start = time.perf_counter()
            with torch.inference_mode(), thread_policy():
                out = transcriber.transcribe(clip, progress=progress)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
        finally:
            with self._state_lock:
                entry.in_use -= 1
                self._running_mb -= counted
            allocator.release()  # the run's tensors are freed: hand their pages back (glibc keeps them)
        return Transcription(
            model_id=model_id, notes=out.notes, audio_seconds=clip.duration,
            load_seconds=load_seconds, inference_seconds=seconds, device=str(self.device),
            dtype=str(transcriber.dtype).replace("torch.", ""), tokens=out.tokens, info=dict(out.info),
        )


def _weights_mb(transcriber: Any) -> float:
    """Parameter + buffer megabytes of every nn.Module the transcriber holds."""
    total = 0
    seen: set[int] = set()
    for value in vars(transcriber).values():
        if isinstance(value, torch.nn.Module):
            for t in list(value.parameters()) + list(value.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
    return total / 2**20


_default_manager: ModelManager | None = None
_default_lock = threading.Lock()


def manager_for(settings: Settings) -> Any:
    """The settings' backend: a :class:`ModelManager` on their device (unusable: the default) and
    memory budget, or for ``backend="ray"`` a :class:`mt3_demo.remote.RayManager` of the cluster at
    ``ray_address`` (same methods; Ray itself is imported only when that manager first needs it)."""
    if settings.backend == "ray":
        from .remote import RayManager

        return RayManager(address=settings.ray_address)
    return ModelManager(device=default_device(settings.device), budget_mb=settings.memory_budget_mb)


def get_manager(settings: Settings | None = None) -> Any:
    """The process-wide manager (the UI and the package API share it); ``settings`` default to
    the environment's (``mt3_demo.options.settings_from_env``)."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = manager_for(settings or settings_from_env(strict=False))
        return _default_manager
