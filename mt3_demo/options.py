"""Every setting a run takes, typed and validated once: what is loaded, how it is decoded, the run.

* What needs a reload — one frozen dataclass per model (``MT3Options``, ``MRMT3Options``,
  ``YourMT3Options``, ``TranskunOptions``): checkpoint, position table (compat), memory length,
  precision, frontend. With the checkpoint they are the weights' cache key.
* What is chosen per request — ``MT3Decode``, ``MRMT3Decode``, ``YourMT3Decode``, ``TranskunDecode``
  (max tokens, trimming, stop at EOS, batch size, Transkun's segment and hop), as whisper's
  ``DecodingOptions`` beside ``load_model``. Changing them never reloads a model. ``None`` means
  "what the model or its load options say" and is settled when the run starts (MT3's token limit
  follows its compat mode).
* :class:`Settings`: what applies to the whole process (device, longest recording, memory budget,
  queue, where checkpoints are, the Hub...). The environment is read here and nowhere else in the
  package (:func:`read_env`, :func:`settings_from_env`), once per door (``app.py``, ``cli.main``);
  everything below receives the values as arguments.
* :func:`model_options` builds either kind from CLI flags or UI controls. Validation happens in
  ``__post_init__``, so every way in (CLI, page, API, package) is checked by the same rules.

Every bad value raises :class:`OptionError`, whose message is for people (the CLI exits with 2).
This module imports only the standard library (no model code): every layer may use it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # "auto": the model's usual choice (fp32 everywhere)
MT3_COMPAT_MODES = ("magenta", "kunato")
MR_MT3_FRONTENDS = ("torchaudio", "torchaudio-legacy", "tf")
TRIM_MODES = ("kunato", "magenta")
YOURMT3_DEFAULT_CHECKPOINT = "YPTF.MoE+Multi (noPS)"

# Token limits against the published position tables (a decoder cannot look past its last row):
# MT3 and MR-MT3 decoders have 2048 rows and the start token takes one; YourMT3+'s has 1034 rows
# (its start token is not a position). The loaded checkpoint's own table is checked again at run time.
MT3_POSITIONS = 2048
MR_MT3_POSITIONS = 2048
YOURMT3_POSITIONS = 1034
MAX_BATCH = 1024  # segments decoded together: far above what fits any device we run on

DEFAULT_MAX_SECONDS = 600.0  # 10 minutes
DEFAULT_RUNS_MAX_MB = 1024.0
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
# Upper bounds of the operator's numbers (issue 21: 1e308 MB or 512 threads broke every request).
MAX_SECONDS_LIMIT = 24 * 3600.0  # a day of audio
MEMORY_LIMIT_MB = 16 * 2**20  # 16 TB
CONCURRENCY_LIMIT = 64
QUEUE_SIZE_LIMIT = 10_000
THREADS_LIMIT = 64
RUNS_MAX_MB_LIMIT = 2**20  # 1 TB of request folders

MAX_SECONDS_ENV = "MT3_DEMO_MAX_SECONDS"
DEVICE_ENV = "MT3_DEMO_DEVICE"
BUDGET_ENV = "MT3_DEMO_MEMORY_BUDGET_MB"
EAGER_ENV = "MT3_DEMO_EAGER"
CONCURRENCY_ENV = "MT3_DEMO_CONCURRENCY"
QUEUE_SIZE_ENV = "MT3_DEMO_QUEUE_SIZE"
THREADS_ENV = "MT3_DEMO_THREADS"
RUNS_MAX_MB_ENV = "MT3_DEMO_RUNS_MAX_MB"
CHECKPOINTS_ENV = "MT3_DEMO_CHECKPOINTS"
SOUNDFONT_ENV = "MT3_DEMO_SOUNDFONT"
CUDA_GRAPHS_ENV = "MT3_DEMO_CUDA_GRAPHS"
DEBUG_ENV = "MT3_DEMO_DEBUG"
OFFLINE_ENV = "HF_HUB_OFFLINE"
ENDPOINT_ENV = "HF_ENDPOINT"
UPLOAD_DIR_ENV = "GRADIO_TEMP_DIR"  # Gradio's upload folder: the app's run folders live inside it
ZERO_GPU_ENV = "SPACES_ZERO_GPU"
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable: the cluster to join ("auto": the one on this machine)
LEADERBOARD_ENV = "MT3_DEMO_LEADERBOARD"  # an `evaluate` output folder the page shows as its Leaderboard tab
BACKEND_ENV = "MT3_DEMO_BACKEND"
BACKENDS = ("local", "ray")  # where the models run: in this process, or on a Ray Serve cluster
# What a Ray replica needs from the front end's environment to find the weights the way the front
# end would (mt3_demo.serving forwards them): the checkpoint folder, the Hub's offline switch and
# location and cache, the thread count, the memory budget and the CUDA-graph switch.
REPLICA_ENV = (CHECKPOINTS_ENV, OFFLINE_ENV, ENDPOINT_ENV, "HF_HOME", "HF_HUB_CACHE", THREADS_ENV, BUDGET_ENV,
               CUDA_GRAPHS_ENV)


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


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise OptionError(f"{name} must be true or false, not {value!r}.")


def _megabytes(name: str, value: Any, maximum: float, *, optional: bool = True) -> None:
    """A finite number of megabytes above zero and at most ``maximum``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= maximum:
        raise OptionError(f"{name} must be a number of megabytes above 0 and at most {maximum:.0f}, "
                          f"not {value!r}.")


# ------------------------------------------------------------------------------------------------
# Per-model load options: what needs a reload (with the checkpoint, the weights' cache key)


@dataclass(frozen=True)
class TranskunOptions:
    """Transkun's weights ship in its wheel: nothing to choose at load time."""


@dataclass(frozen=True)
class MT3Options:
    compat: str = "magenta"  # what the weights were trained with; "kunato" reproduces the port
    precision: str = "auto"

    def __post_init__(self) -> None:
        _choice("compat", self.compat, MT3_COMPAT_MODES)
        _choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class MRMT3Options:
    checkpoint_name: str | None = None  # a published file by name; None: the default file
    frontend: str | None = None  # None: the one the checkpoint was trained with
    memory_length: int | None = None  # N; None: config.json, registry, file name, then 64
    precision: str = "auto"

    def __post_init__(self) -> None:
        _choice("frontend", self.frontend, MR_MT3_FRONTENDS, optional=True)
        _count("memory_length", self.memory_length, minimum=0, maximum=1024)
        _choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class YourMT3Options:
    checkpoint_name: str = YOURMT3_DEFAULT_CHECKPOINT
    precision: str = "auto"

    def __post_init__(self) -> None:
        _choice("precision", self.precision, PRECISIONS)


# ------------------------------------------------------------------------------------------------
# Per-request decode options: how a loaded model decodes one clip (never a reload)


@dataclass(frozen=True)
class TranskunDecode:
    segment_s: float | None = None  # None: the model's own segment length (16 s)
    # 12 s instead of Transkun's 8 s: the same onset F1 on our examples, ~30 % less compute.
    hop_s: float = 12.0

    def __post_init__(self) -> None:
        _seconds("segment_s", self.segment_s)
        _seconds("hop_s", self.hop_s, optional=False)


@dataclass(frozen=True)
class MT3Decode:
    max_tokens: int | None = None  # None: the compat mode's limit (magenta 1024, kunato 1023)
    trim: str | None = None  # None: the compat mode's rule (magenta: "magenta", kunato: "kunato")
    stop_at_eos: bool = True  # False: every segment decodes max_tokens ids (benchmarks: fixed work)
    batch_size: int | None = None  # segments per chunk; None: by device and memory
    cuda_graphs: bool = True  # on CUDA, replay captured graphs (off: Settings.cuda_graphs)
    # positions a CUDA-graph cache starts with before it doubles (bench_cuda.py --growth); None: 128
    static_cache_start: int | None = None

    def __post_init__(self) -> None:
        _count("max_tokens", self.max_tokens, maximum=MT3_POSITIONS - 1)
        _count("static_cache_start", self.static_cache_start, maximum=MT3_POSITIONS)
        _choice("trim", self.trim, TRIM_MODES, optional=True)
        _bool("stop_at_eos", self.stop_at_eos)
        _count("batch_size", self.batch_size, maximum=MAX_BATCH)
        _bool("cuda_graphs", self.cuda_graphs)


@dataclass(frozen=True)
class MRMT3Decode:
    max_tokens: int | None = None  # None: upstream's 1023
    trim: str = "kunato"  # upstream's: a segment without EOS is dropped, UNK ends a segment
    stop_at_eos: bool = True
    batch_size: int | None = None  # segments per encoder chunk; None: by device
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        _count("max_tokens", self.max_tokens, maximum=MR_MT3_POSITIONS - 1)
        _choice("trim", self.trim, TRIM_MODES)
        _bool("stop_at_eos", self.stop_at_eos)
        _count("batch_size", self.batch_size, maximum=MAX_BATCH)
        _bool("cuda_graphs", self.cuda_graphs)


@dataclass(frozen=True)
class YourMT3Decode:
    max_tokens: int | None = None  # per channel; None: the tokenizer's 256
    stop_at_eos: bool = True
    batch_size: int = 8  # segments (x 13 channels) decoded together
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        _count("max_tokens", self.max_tokens, maximum=YOURMT3_POSITIONS)
        _bool("stop_at_eos", self.stop_at_eos)
        _count("batch_size", self.batch_size, maximum=MAX_BATCH, optional=False)
        _bool("cuda_graphs", self.cuda_graphs)


ModelOptions = Any  # one of the load dataclasses above (the registry entry names which)
DecodeOptions = Any  # one of the decode dataclasses above (ModelSpec.decode_type)


def model_options(options_type: type, values: Mapping[str, Any]) -> Any:
    """Load or decode options of one model from the values a user set (CLI flags, UI controls, the
    API's JSON).

    Keys that the model has no field for are ignored (``--compat`` means nothing to YourMT3);
    ``None`` means "not set" and keeps the default.
    """
    names = {f.name for f in dataclasses.fields(options_type)}
    return options_type(**{k: v for k, v in values.items() if k in names and v is not None})


def decode_options(decode_type: type, values: Any, model_id: str = "") -> Any:
    """A model's decode options from a JSON-like mapping (the page, the API): every key must be a
    field of ``decode_type`` — a misspelt name is refused, not ignored."""
    if values is None:
        return decode_type()
    if isinstance(values, decode_type):
        return values
    what = f"{model_id} options" if model_id else "decode options"
    if dataclasses.is_dataclass(values):
        raise OptionError(f"{what} must be {decode_type.__name__}, not {type(values).__name__}.")
    if not isinstance(values, Mapping):
        raise OptionError(f"{what} must be an object of names and values, not {type(values).__name__}.")
    names = [f.name for f in dataclasses.fields(decode_type)]
    unknown = [str(k) for k in values if k not in names]
    if unknown:
        raise OptionError(f"{what}: unknown option {unknown[0]!r}; known: {', '.join(names)}.")
    try:
        return decode_type(**{k: v for k, v in values.items() if v is not None})
    except OptionError as e:
        raise OptionError(f"{what}: {e}") from None


def decode_from_json(text: str | None, decode_types: Mapping[str, type]) -> dict[str, Any]:
    """Decode options per model from a JSON object (the ``/transcribe`` API's ``options``), e.g.
    ``{"mt3": {"max_tokens": 64}, "yourmt3": {"batch_size": 2}}``; empty text: none. Every model id
    and option name must be known, every value pass its option's check (:class:`OptionError`)."""
    import json

    if text is None or not str(text).strip():
        return {}
    try:
        values = json.loads(text)
    except ValueError as e:
        raise OptionError(f"options must be a JSON object like {{\"mt3\": {{\"max_tokens\": 64}}}} ({e}).") from None
    if not isinstance(values, dict):
        raise OptionError(f"options must be a JSON object of model ids, not {type(values).__name__}.")
    unknown = [m for m in values if m not in decode_types]
    if unknown:
        raise OptionError(f"options name an unknown model {unknown[0]!r}; known: {', '.join(decode_types)}.")
    return {m: decode_options(decode_types[m], v, m) for m, v in values.items()}


# ------------------------------------------------------------------------------------------------
# Run settings


@dataclass(frozen=True)
class Settings:
    """What applies to every model of a run and to the server. Built once per door (``app.py``,
    ``cli.main``) from the environment (:func:`read_env`), or in code; passed down from there."""

    max_seconds: float = DEFAULT_MAX_SECONDS  # longest accepted recording
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None: CUDA when available
    memory_budget_mb: float | None = None  # None: half the free RAM / 80 % of the GPU
    concurrency: int = 1  # runs served at once (per device)
    queue_size: int = 20  # requests that may wait
    eager: bool = False  # load every available model at start-up
    threads: int | None = None  # torch threads per run; None: mt3_demo.threads' policy
    runs_max_mb: float = DEFAULT_RUNS_MAX_MB  # disk kept for the app's per-request folders
    checkpoints_root: Path | None = None  # <root>/<model_id>/<file>: checkpoints placed by hand
    hub_offline: bool = False  # never ask the Hugging Face Hub (HF_HUB_OFFLINE)
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    soundfont: Path | None = None  # None or a missing file: pretty_midi's bundled one
    cuda_graphs: bool = True  # False: every decode runs without captured CUDA graphs
    upload_dir: Path | None = None  # Gradio's upload folder; None: <system temp>/gradio
    debug: bool = False  # the CLI prints tracebacks
    zero_gpu: bool = False  # a ZeroGPU Space (a GPU per call)
    backend: str = "local"  # "local": models in this process; "ray": the deployments of a Ray Serve cluster
    # The Ray cluster of the ray backend and of `evaluate --ray` ("auto": the one started on this machine)
    ray_address: str = "auto"
    leaderboard: str | None = None  # an `evaluate` output folder for the page's Leaderboard tab; None: no tab

    def __post_init__(self) -> None:
        _seconds("max_seconds", self.max_seconds, optional=False)
        if self.max_seconds > MAX_SECONDS_LIMIT:
            raise OptionError(f"max_seconds must be at most {MAX_SECONDS_LIMIT:.0f}, not {self.max_seconds!r}.")
        _megabytes("memory_budget_mb", self.memory_budget_mb, MEMORY_LIMIT_MB)
        _count("concurrency", self.concurrency, maximum=CONCURRENCY_LIMIT, optional=False)
        _count("queue_size", self.queue_size, maximum=QUEUE_SIZE_LIMIT, optional=False)
        _count("threads", self.threads, maximum=THREADS_LIMIT)
        _megabytes("runs_max_mb", self.runs_max_mb, RUNS_MAX_MB_LIMIT, optional=False)
        for name in ("eager", "hub_offline", "cuda_graphs", "debug", "zero_gpu"):
            _bool(name, getattr(self, name))
        _choice("backend", self.backend, BACKENDS)
        if not isinstance(self.ray_address, str) or not self.ray_address.strip():
            raise OptionError(f"ray_address must be a Ray cluster address such as auto or host:6379, "
                              f"not {self.ray_address!r}.")


def _flag(value: str, default: bool = False) -> bool:
    """The one reading of an on/off variable (``" 1"`` is on, like ``"1"``, for every reader)."""
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return default


def _path(value: str) -> Path:
    return Path(value).expanduser()


_ENV_FIELDS = {  # variable -> (Settings field, parser); a parser's ValueError is "not a number"
    MAX_SECONDS_ENV: ("max_seconds", float),
    DEVICE_ENV: ("device", str),
    BUDGET_ENV: ("memory_budget_mb", float),
    CONCURRENCY_ENV: ("concurrency", int),
    QUEUE_SIZE_ENV: ("queue_size", int),
    THREADS_ENV: ("threads", int),
    RUNS_MAX_MB_ENV: ("runs_max_mb", float),
    CHECKPOINTS_ENV: ("checkpoints_root", _path),
    OFFLINE_ENV: ("hub_offline", _flag),
    ENDPOINT_ENV: ("hf_endpoint", lambda v: v.rstrip("/")),
    SOUNDFONT_ENV: ("soundfont", _path),
    CUDA_GRAPHS_ENV: ("cuda_graphs", lambda v: _flag(v, default=True)),
    UPLOAD_DIR_ENV: ("upload_dir", _path),
    DEBUG_ENV: ("debug", _flag),
    ZERO_GPU_ENV: ("zero_gpu", _flag),
    RAY_ADDRESS_ENV: ("ray_address", str),
    LEADERBOARD_ENV: ("leaderboard", str),
    BACKEND_ENV: ("backend", lambda raw: raw.lower()),
}


def settings_from_env(environ: Mapping[str, str] | None = None, strict: bool = True) -> Settings:
    """:class:`Settings` from the environment (unset or empty: the default).

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
    """(settings, problems): every usable variable applied, one message per unusable one.

    ``SPACES_ZERO_GPU`` also means eager: ZeroGPU wants the weights on its emulated GPU at start-up.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems = []
    for var, (name, parse) in _ENV_FIELDS.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            value = parse(raw)
            Settings(**{name: value})  # validates this one value (with its range)
            values[name] = value
        except (ValueError, OptionError) as e:
            detail = str(e) if isinstance(e, OptionError) else f"{raw!r} is not a number"
            problems.append(f"{var}={raw!r} is not usable: {detail}")
    values["eager"] = _flag(env.get(EAGER_ENV, "")) or values.get("zero_gpu", False)
    return Settings(**values), problems
