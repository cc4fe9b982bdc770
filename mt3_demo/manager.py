"""The model manager: loads each model lazily, once, keeps it warm, unloads it when memory runs short.

* Lazy: nothing is loaded until a model is first asked for (or ``preload`` for eager hosts such as
  ZeroGPU Spaces).
* Once: a per-model lock makes two simultaneous requests share a single load. The weights' cache
  key is (checkpoint, load options): per-request decode options (``mt3_demo.options.<Model>Decode``)
  never reload a model.
* Warm: loaded models stay in memory, most recently used last.
* Bounded: before a load, least-recently-used idle models are unloaded until the new one fits the
  budget (``Settings.memory_budget_mb``, default half the free RAM or 80 % of the GPU); on CPU
  the budget also holds each run in progress at its measured need (``mt3_demo.memory``).
* One resolution: :meth:`ModelManager.resolve` finds a model's checkpoint once per load and hands
  the location to the adapter's ``build``; :meth:`availability` resolves with ``fetch=False``,
  which downloads and writes nothing (wording: :mod:`mt3_demo.availability`).
* Honest about time: load time is measured and reported apart from inference time.

The specs come from :mod:`mt3_demo.registry` unless given (``ModelManager(specs=...)``); the
process-wide values (device, budget, where checkpoints are, threads) from one
:class:`~mt3_demo.options.Settings`.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from . import allocator, hub
from .audio import Clip
from .availability import Availability, availability
from .checkpoints import Sources
from .memory import run_mb
from .models.base import ModelSpec, ProgressFn, Transcriber
from .notes import Transcription
from .options import DEVICE_ENV, OptionError, Settings, decode_options, settings_from_env
from .provenance import provenance
from .registry import DEFAULT_MODEL, UnknownModel, default_selection, load_registry, spec_of
from .threads import thread_policy

log = logging.getLogger(__name__)

__all__ = ["Availability", "BackendError", "DEFAULT_MODEL", "ModelManager", "UnknownModel", "default_device",
           "get_manager", "manager_for", "parse_device"]


class BackendError(RuntimeError):
    """The backend that runs the models could not run this request (a Ray replica died, its queue
    is full, the cluster went away). The message is one sentence for people, with what to do."""


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


def run_decode(spec: ModelSpec, decode: Any, settings: Settings) -> Any:
    """One run's decode options of ``spec``'s model: ``decode`` (its ``decode_type``, a mapping of
    field names to values checked by the same rules, or None: the defaults), with CUDA graphs off
    when ``settings.cuda_graphs`` says so (every manager's rule: local and Ray)."""
    decode = decode_options(spec.decode_type, decode, spec.id)
    if not settings.cuda_graphs and getattr(decode, "cuda_graphs", False):
        decode = replace(decode, cuda_graphs=False)
    return decode


@dataclass
class _Loaded:
    transcriber: Transcriber
    options_key: tuple
    load_seconds: float
    weights_mb: float
    in_use: int = 0
    weights: str = ""  # provenance of the loaded file (Provenance.short), said by every result


@dataclass
class ModelManager:
    """``specs``: the models (None: :func:`~mt3_demo.registry.load_registry`); ``options`` maps a
    model id to its load options (``mt3_demo.options``; a model without an entry loads with its
    defaults); ``settings`` the process-wide values; ``device`` and ``budget_mb`` default to theirs."""

    device: torch.device | None = None  # None: Settings.device when usable, else CUDA when present
    checkpoints: dict[str, Path] = field(default_factory=dict)  # per-model user override
    options: dict[str, Any] = field(default_factory=dict)  # model id -> its load options
    decode: dict[str, Any] = field(default_factory=dict)  # model id -> decode options when a run gives none
    budget_mb: float | None = None  # None: Settings.memory_budget_mb, else default_budget_mb
    specs: dict[str, ModelSpec] | None = None
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        self.import_errors: dict[str, str] = {}
        if self.specs is None:
            self.specs, self.import_errors = load_registry()
        if self.device is None:
            self.device = default_device(self.settings.device)
        if self.budget_mb is None:
            self.budget_mb = self.settings.memory_budget_mb or default_budget_mb(self.device)
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()  # LRU: most recent last
        self._state_lock = threading.Lock()  # guards _loaded and _model_locks
        self._model_locks: dict[str, threading.Lock] = {}
        self.load_count: dict[str, int] = {}  # how many times each model was built (tests, logs)
        self._running_mb = 0.0  # measured memory of the runs in progress (memory.run_mb), budgeted

    @property
    def sources(self) -> Sources:
        """Where checkpoints placed by hand are, and whether the Hub may be asked (the settings')."""
        return Sources(self.settings.checkpoints_root, self.settings.hub_offline)

    # ------------------------------------------------------------------ registry

    def model_ids(self) -> list[str]:
        return list(self.specs)

    def spec(self, model_id: str) -> ModelSpec:
        return spec_of(self.specs, model_id)

    def options_for(self, model_id: str) -> Any:
        """The model's load options: the ones given for it, else its defaults."""
        options = self.options.get(model_id)
        return options if options is not None else self.spec(model_id).options_type()

    def decode_for(self, model_id: str, decode: Any = None) -> Any:
        """The model's decode options for one run: ``decode`` (its ``decode_type``, or a mapping of
        field names to values, checked by the same rules), else the manager's ``decode`` entry,
        else the defaults; CUDA graphs off when ``Settings.cuda_graphs`` says so."""
        return run_decode(self.spec(model_id), decode if decode is not None else self.decode.get(model_id),
                          self.settings)

    def resolve(self, model_id: str, fetch: bool = True) -> Any:
        """The one resolution of a model's checkpoint (override, options, ``fetch`` as in ModelSpec)."""
        return self.spec(model_id).resolve(self.checkpoints.get(model_id), self.options_for(model_id), fetch,
                                           self.sources)

    def availability(self, model_id: str) -> Availability:
        """Are the weights here (and which), downloadable now, or missing (with the fix)?

        Writes and downloads nothing. A file that would have to be downloaded counts as
        unavailable unless the Hub is reachable (:mod:`mt3_demo.hub`: asked once, remembered).
        """
        return availability(self.spec(model_id), lambda fetch: self.resolve(model_id, fetch),
                             self.options_for(model_id),
                             lambda: hub.status(self.settings.hub_offline, self.settings.hf_endpoint))

    def check(self, model_id: str) -> Availability:
        """The one question before a run: can ``model_id`` run now? A loaded model answers
        "loaded" without resolving anything; otherwise :meth:`availability`. Unknown ids raise
        :class:`~mt3_demo.registry.UnknownModel`."""
        self.spec(model_id)
        if model_id in self.loaded_ids():
            return Availability("loaded", "loaded and warm")
        return self.availability(model_id)

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
            transcriber = spec.build(location, self.device, self.options_for(model_id))  # load options only
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - start
            weights_mb = _weights_mb(transcriber) or spec.size_mb
            entry = _Loaded(transcriber, key, seconds, weights_mb, in_use=int(hold),
                            weights=self._weights_label(model_id, location))
            with self._state_lock:
                self._loaded[model_id] = entry
                self.load_count[model_id] = self.load_count.get(model_id, 0) + 1
            log.info("loaded %s on %s in %.2f s (%.0f MB)", model_id, self.device, seconds, weights_mb)
            return entry, seconds

    def _weights_label(self, model_id: str, location: Any) -> str:
        """Which weights were loaded from ``location`` (the sha256 is remembered per file)."""
        try:
            spec = self.spec(model_id)
            return provenance(location, spec.published(location, self.options_for(model_id)),
                              spec.packaged(location)).short
        except OSError:
            return "unknown"

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

    def transcribe(self, model_id: str, clip: Clip, decode: Any = None, progress: ProgressFn | None = None,
                   on_loaded: Callable[[Transcriber], None] | None = None,
                   on_wait: Callable[[str], None] | None = None) -> Transcription:
        """Load if needed, transcribe with ``decode`` (the model's decode options, see
        :meth:`decode_for`; they never cause a reload), time both. Raises OptionError (bad decode
        options, checked before anything loads), CheckpointError, adapter errors.

        ``on_loaded(transcriber)`` is called once the weights are in memory, before inference
        (progress reports switch from "loading" to the model's own phases there). ``on_wait(phrase)``
        is the hook of managers with a queue in front of the model (:class:`mt3_demo.remote.RayManager`
        says "waiting for a free … replica" through it); nothing queues here, so it is not called."""
        decode = self.decode_for(model_id, decode)
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
            with torch.inference_mode(), thread_policy(self.settings.threads):
                out = transcriber.transcribe(clip, decode, progress=progress)
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
            weights=entry.weights,
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

        return RayManager(settings)
    return ModelManager(settings=settings)


def get_manager(settings: Settings | None = None) -> Any:
    """The process-wide manager (the UI and the package API share it), made on first use with
    ``settings`` — the door's (``app.py``); the package API, which has no door of its own, reads
    the environment once here (``mt3_demo.options.settings_from_env``, lenient)."""
    global _default_manager
    with _default_lock:
        if _default_manager is None:
            _default_manager = manager_for(settings or settings_from_env(strict=False))
        return _default_manager
