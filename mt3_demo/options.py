"""Every setting a run takes, typed and validated once: per-model options and run settings.

* One frozen dataclass per model (``MT3Options``, ``MRMT3Options``, ``YourMT3Options``,
  ``TranskunOptions``), like whisper's ``DecodingOptions``. Its defaults are the only place a
  default is written; ``None`` means "what the model or its checkpoint says" (for example MT3's
  token limit follows its compatibility mode, MR-MT3's frontend follows the checkpoint).
* :class:`Settings`: what applies to the whole run (device, longest recording, memory budget,
  queue), read from ``MT3_DEMO_*`` environment variables by :func:`settings_from_env` and
  overridden by CLI flags with :func:`dataclasses.replace`.
* :func:`model_options` builds a model's options from CLI flags or UI controls (a mapping of the
  names the user set). Validation happens in ``__post_init__``, so every way in is checked the same.

Every bad value raises :class:`OptionError`, whose message is for people (the CLI exits with 2).
This module imports only the standard library (no model code): every layer may use it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # "auto": the model's usual choice (fp32 everywhere)
MT3_COMPAT_MODES = ("magenta", "kunato")
MR_MT3_FRONTENDS = ("torchaudio", "torchaudio-legacy", "tf")
TRIM_MODES = ("kunato", "magenta")
YOURMT3_DEFAULT_CHECKPOINT = "YPTF.MoE+Multi (noPS)"

DEFAULT_MAX_SECONDS = 600.0  # 10 minutes
MAX_SECONDS_ENV = "MT3_DEMO_MAX_SECONDS"
DEVICE_ENV = "MT3_DEMO_DEVICE"
BUDGET_ENV = "MT3_DEMO_MEMORY_BUDGET_MB"
EAGER_ENV = "MT3_DEMO_EAGER"
CONCURRENCY_ENV = "MT3_DEMO_CONCURRENCY"
QUEUE_SIZE_ENV = "MT3_DEMO_QUEUE_SIZE"
THREADS_ENV = "MT3_DEMO_THREADS"
RUNS_MAX_MB_ENV = "MT3_DEMO_RUNS_MAX_MB"
DEFAULT_RUNS_MAX_MB = 1024.0
BACKEND_ENV = "MT3_DEMO_BACKEND"
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable: the cluster the ray backend joins
BACKENDS = ("local", "ray")  # where the models run: in this process, or on a Ray Serve cluster
# What a Ray replica needs from the front end's environment to find the weights the way the front
# end would (mt3_demo.serving forwards them): the checkpoint folder, the Hub's offline switch and
# location, the thread count and the memory budget.
REPLICA_ENV = ("MT3_DEMO_CHECKPOINTS", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE",
               THREADS_ENV, BUDGET_ENV)


class OptionError(ValueError):
    """A setting that cannot be used. The message names the setting and says what is allowed."""


# ------------------------------------------------------------------------------------------------
# Checks shared by every option


def _count(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None,
           optional: bool = True) -> None:
    """An integer in [minimum, maximum] (None allowed when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{name} must be a whole number, not {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise OptionError(f"{name} must be at least {minimum}{upper}, not {value}.")


def _seconds(name: str, value: Any, *, optional: bool = True) -> None:
    """A finite number of seconds above zero (NaN and infinity are refused: NaN compares false)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise OptionError(f"{name} must be a positive number of seconds, not {value!r}.")


def _choice(name: str, value: Any, choices: tuple[str, ...], *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(choices)}, not {value!r}.")


# ------------------------------------------------------------------------------------------------
# Per-model options


@dataclass(frozen=True)
class TranskunOptions:
    segment_s: float | None = None  # None: the model's own segment length (16 s)
    # 12 s instead of Transkun's 8 s: the same onset F1 on our examples, ~30 % less compute.
    hop_s: float = 12.0

    def __post_init__(self) -> None:
        _seconds("segment_s", self.segment_s)
        _seconds("hop_s", self.hop_s, optional=False)


@dataclass(frozen=True)
class MT3Options:
    compat: str = "magenta"  # what the weights were trained with; "kunato" reproduces the port
    max_tokens: int | None = None  # None: the compat mode's limit (magenta 1024, kunato 1023)
    precision: str = "auto"
    batch_size: int | None = None  # segments per chunk; None: by device

    def __post_init__(self) -> None:
        _choice("compat", self.compat, MT3_COMPAT_MODES)
        _count("max_tokens", self.max_tokens)
        _choice("precision", self.precision, PRECISIONS)
        _count("batch_size", self.batch_size)


@dataclass(frozen=True)
class MRMT3Options:
    checkpoint_name: str | None = None  # a published file by name; None: the default file
    frontend: str | None = None  # None: the one the checkpoint was trained with
    memory_length: int | None = None  # N; None: config.json, registry, file name, then 64
    max_tokens: int | None = None  # None: upstream's 1023
    trim: str = "kunato"
    precision: str = "auto"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _choice("frontend", self.frontend, MR_MT3_FRONTENDS, optional=True)
        _count("memory_length", self.memory_length, minimum=0, maximum=1024)
        _count("max_tokens", self.max_tokens)
        _choice("trim", self.trim, TRIM_MODES)
        _choice("precision", self.precision, PRECISIONS)
        _count("batch_size", self.batch_size)


@dataclass(frozen=True)
class YourMT3Options:
    checkpoint_name: str = YOURMT3_DEFAULT_CHECKPOINT
    max_tokens: int | None = None  # per channel; None: the tokenizer's 256
    precision: str = "auto"
    batch_segments: int = 8

    def __post_init__(self) -> None:
        _count("max_tokens", self.max_tokens)
        _choice("precision", self.precision, PRECISIONS)
        _count("batch_segments", self.batch_segments, optional=False)


ModelOptions = Any  # one of the dataclasses above (the registry entry names which)


def model_options(options_type: type, values: Mapping[str, Any]) -> Any:
    """The options of one model from the values a user set (CLI flags, UI controls).

    Keys that the model has no field for are ignored (``--compat`` means nothing to YourMT3);
    ``None`` means "not set" and keeps the default.
    """
    names = {f.name for f in dataclasses.fields(options_type)}
    return options_type(**{k: v for k, v in values.items() if k in names and v is not None})


# ------------------------------------------------------------------------------------------------
# Run settings


@dataclass(frozen=True)
class Settings:
    """What applies to every model of a run and to the server."""

    max_seconds: float = DEFAULT_MAX_SECONDS  # longest accepted recording
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: CUDA when available
    memory_budget_mb: float | None = None  # None: half the free RAM / 80 % of the GPU
    concurrency: int = 1  # runs served at once (per device)
    queue_size: int = 20  # requests that may wait
    eager: bool = False  # load every available model at start-up
    threads: int | None = None  # torch threads per run; None: mt3_demo.threads' policy
    runs_max_mb: float = DEFAULT_RUNS_MAX_MB  # disk kept for the app's per-request folders
    backend: str = "local"  # "local": models in this process; "ray": the deployments of a Ray Serve cluster
    ray_address: str = "auto"  # the Ray cluster of the ray backend ("auto": the one started on this machine)

    def __post_init__(self) -> None:
        _seconds("max_seconds", self.max_seconds, optional=False)
        if self.memory_budget_mb is not None:
            _seconds("memory_budget_mb", self.memory_budget_mb)  # same rule: finite, above zero
        _count("concurrency", self.concurrency)
        _count("queue_size", self.queue_size)
        _count("threads", self.threads)
        _seconds("runs_max_mb", self.runs_max_mb, optional=False)  # same rule: finite, above zero
        _choice("backend", self.backend, BACKENDS)
        if not isinstance(self.ray_address, str) or not self.ray_address.strip():
            raise OptionError(f"ray_address must be a Ray cluster address such as auto or host:6379, "
                              f"not {self.ray_address!r}.")


_ENV_FIELDS = {  # variable -> (Settings field, parser)
    MAX_SECONDS_ENV: ("max_seconds", float),
    DEVICE_ENV: ("device", str),
    BUDGET_ENV: ("memory_budget_mb", float),
    CONCURRENCY_ENV: ("concurrency", int),
    QUEUE_SIZE_ENV: ("queue_size", int),
    THREADS_ENV: ("threads", int),
    RUNS_MAX_MB_ENV: ("runs_max_mb", float),
    BACKEND_ENV: ("backend", lambda raw: raw.lower()),
    RAY_ADDRESS_ENV: ("ray_address", str),
}


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def settings_from_env(environ: Mapping[str, str] | None = None, strict: bool = True) -> Settings:
    """:class:`Settings` from ``MT3_DEMO_*`` variables (unset or empty: the default).

    ``strict`` raises :class:`OptionError` naming the variable (the CLI exits with 2). Otherwise a
    bad variable keeps its default and is reported in ``problems`` of :func:`read_env` (the app
    starts anyway and logs why).
    """
    settings, problems = read_env(environ)
    if strict and problems:
        raise OptionError(problems[0])
    return settings


def replica_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of :data:`REPLICA_ENV` that are set (non-empty), to be given to Ray replicas."""
    env = os.environ if environ is None else environ
    return {var: env[var] for var in REPLICA_ENV if env.get(var, "").strip()}


def read_env(environ: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """(settings, problems): every usable variable applied, one message per unusable one."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {"eager": _flag(env.get(EAGER_ENV, "")) or _flag(env.get("SPACES_ZERO_GPU", ""))}
    problems = []
    for var, (name, parse) in _ENV_FIELDS.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            Settings(**{name: parse(raw)})  # validates this one value
            values[name] = parse(raw)
        except (ValueError, OptionError) as e:
            detail = str(e) if isinstance(e, OptionError) else f"{raw!r} is not a number"
            problems.append(f"{var}={raw!r} is not usable: {detail}")
    return Settings(**values), problems
