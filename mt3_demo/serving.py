"""The models as a Ray Serve application: one deployment per model id, one loaded model per replica.

    serve run mt3_demo.serving:app models=transkun,mt3      # Ray's CLI, key=value arguments
    serve run deploy/serve.yaml                              # replicas, GPUs, autoscaling per model
    serve.run(mt3_demo.serving.app({"models": "transkun,mt3"}), name=APP_NAME)

A replica (:class:`ModelReplica`) is a local :class:`~mt3_demo.manager.ModelManager` that serves one
model: the same registry, options, checkpoint resolution, sha256 pins and safe loading as the app's
own. It loads its model when it starts (a replica is ready when its model is) and runs one request
at a time (``max_ongoing_requests=1``); Serve keeps at most ``max_queued_requests`` more waiting in
front of each deployment and refuses the rest at once. A request is a streaming call: the replica
yields ``("started",)``, ``("loaded", segments, dtype)``, ``("progress", done, total)`` and finally
``("done", Transcription)``; the front end (:mod:`mt3_demo.remote`) turns them into the page's
phases. When the front end cancels (Stop), Serve cancels the replica's generator; the run stops at
its next segment and only then is the replica free for the next request.

The replicas find the weights through the environment of :data:`mt3_demo.options.REPLICA_ENV`
(``MT3_DEMO_CHECKPOINTS``, ``HF_HUB_OFFLINE`` …): the builder's own values are given to them as
Ray's runtime environment, and builder arguments of the same names override them. A replica is a
process of its own, started by Ray: like ``app.py`` and the CLI it is a door, and reads its
:class:`~mt3_demo.options.Settings` once from that environment (``settings_from_env``; a bad
variable fails the deployment with its one sentence, which the page shows).

Ray is imported inside :func:`app` only: the classes here are plain Python (importable, and
testable, without Ray).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from .options import REPLICA_ENV, OptionError, replica_env, settings_from_env

log = logging.getLogger(__name__)

APP_NAME = "mt3-demo"  # the application name deploy/serve.yaml and the docs use
INGRESS = "models"  # the application's entry deployment: lists the models (HTTP GET / answers it)
MAX_QUEUED = 16  # requests that may wait for a model's replicas; more are refused at once
# Per-model arguments: "<model_id>.<key>=value" overrides "<key>=value" for that model.
PER_MODEL_KEYS = ("num_gpus", "num_cpus", "min_replicas", "max_replicas", "max_queued_requests")


@dataclass(frozen=True)
class ReplicaConfig:
    """How one model's deployment is placed and scaled."""

    num_gpus: float  # per replica; fractions let small models share a card
    num_cpus: float
    min_replicas: int
    max_replicas: int
    max_queued_requests: int

    def deployment_options(self, model_id: str, env: dict[str, str]) -> dict[str, Any]:
        """``Deployment.options`` for the model: fixed replicas, or autoscaling between the bounds
        with one request per replica as the target."""
        scaling: dict[str, Any] = {"num_replicas": self.min_replicas}
        if self.max_replicas > self.min_replicas:
            scaling = {"autoscaling_config": {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                              "initial_replicas": self.min_replicas,
                                              "target_ongoing_requests": 1}}
        actor: dict[str, Any] = {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus}
        if env:
            actor["runtime_env"] = {"env_vars": dict(env)}
        return dict(name=model_id, max_ongoing_requests=1, max_queued_requests=self.max_queued_requests,
                    ray_actor_options=actor, **scaling)


@dataclass(frozen=True)
class AppConfig:
    """The builder's arguments, checked: which models, and each one's :class:`ReplicaConfig`."""

    models: tuple[str, ...]
    replicas: dict[str, ReplicaConfig] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # given to every replica


def parse_args(args: Mapping[str, Any] | None, known: list[str], cluster_gpus: float) -> AppConfig:
    """The builder's arguments (strings from ``serve run … key=value``, or values from Python and
    YAML) as an :class:`AppConfig`; anything unusable raises :class:`OptionError` naming it.

    ``models``: comma-separated ids (default: every model of the registry). ``num_gpus`` per
    replica (default 1 where the cluster has GPUs, else 0), ``num_cpus`` (default 1),
    ``min_replicas`` / ``max_replicas`` (default 1 / the minimum), ``max_queued_requests``; each
    also as ``<model_id>.<key>``. The variables of ``REPLICA_ENV`` (``MT3_DEMO_CHECKPOINTS=…``)
    override the builder's environment for the replicas.
    """
    args = dict(args or {})
    raw_models = args.pop("models", None)
    if raw_models is None:
        models = list(known)
    else:
        parts = raw_models.split(",") if isinstance(raw_models, str) else list(raw_models)
        models = [str(m).strip() for m in parts if str(m).strip()]
    unknown = [m for m in models if m not in known]
    if unknown or not models:
        raise OptionError(f"models: {', '.join(unknown) or 'none given'} — known models are {', '.join(known)}.")
    env = replica_env()
    env.update({var: str(args.pop(var)) for var in REPLICA_ENV if var in args})
    defaults = {"num_gpus": 1.0 if cluster_gpus > 0 else 0.0, "num_cpus": 1.0, "min_replicas": 1,
                "max_replicas": None, "max_queued_requests": MAX_QUEUED}
    shared = {key: args.pop(key) for key in list(args) if key in defaults}
    per_model = {key: args.pop(key) for key in list(args) if "." in key and key.split(".", 1)[0] in known
                 and key.split(".", 1)[1] in PER_MODEL_KEYS}
    if args:
        raise OptionError(f"unknown argument(s) {', '.join(sorted(args))}; use models, "
                          f"{', '.join(PER_MODEL_KEYS)} (also as <model_id>.<key>) or {', '.join(REPLICA_ENV)}.")
    replicas = {}
    for model_id in models:
        values = {**defaults, **shared, **{k.split(".", 1)[1]: v for k, v in per_model.items()
                                           if k.split(".", 1)[0] == model_id}}
        replicas[model_id] = _replica_config(model_id, values)
    return AppConfig(tuple(models), replicas, env)


def _replica_config(model_id: str, values: dict[str, Any]) -> ReplicaConfig:
    def number(key: str, kind: type, minimum: float) -> Any:
        try:
            value = kind(values[key])
        except (TypeError, ValueError):
            raise OptionError(f"{model_id}.{key} must be a number, not {values[key]!r}.") from None
        if value < minimum:
            raise OptionError(f"{model_id}.{key} must be at least {minimum}, not {value}.")
        return value

    low = number("min_replicas", int, 1)
    if values["max_replicas"] is None:
        values["max_replicas"] = low
    high = number("max_replicas", int, low)
    return ReplicaConfig(num_gpus=number("num_gpus", float, 0), num_cpus=number("num_cpus", float, 0),
                         min_replicas=low, max_replicas=high,
                         max_queued_requests=number("max_queued_requests", int, 1))


# ------------------------------------------------------------------------------------------------
# The deployments


class ModelReplica:
    """One model, loaded, served one request at a time (the deployment's class)."""

    def __init__(self, model_id: str) -> None:
        import torch

        from .manager import ModelManager

        self.model_id = model_id
        # Ray gives a GPU replica its card(s) as CUDA_VISIBLE_DEVICES: the first visible one is ours.
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        self.manager = ModelManager(device=device, settings=settings_from_env())
        avail = self.manager.availability(model_id)
        if not avail.usable:  # the deployment fails with this message (the front end shows it)
            raise RuntimeError(avail.error(model_id))
        self.manager.get(model_id)  # loaded before the first request: the replica is ready when its model is
        # One worker thread: runs never overlap (max_ongoing_requests=1), and torch keeps its threads.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"mt3-demo-{model_id}")
        self.counts = {"completed": 0, "cancelled": 0, "failed": 0}

    async def transcribe(self, clip: Any, options: Any = None, checkpoint: str | None = None,
                         decode: Any = None) -> AsyncIterator[tuple]:
        """Stream one run's events (see the module docstring); the run's exception is raised as is."""
        from .pipeline import Cancelled

        import numpy as np

        # Ray hands arrays over read-only (zero copy); the models get writable ones, as in the app.
        clip = dataclasses.replace(clip, samples=np.array(clip.samples), original=np.array(clip.original))
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        last: list = [None]

        def emit(*event: Any) -> None:  # called on the worker thread, at every progress report
            if stop.is_set():  # the request was cancelled: stop here, between segments
                raise Cancelled("the request was cancelled")
            if event != last[0]:  # a model may repeat a report (MT3: per chunk); send news only
                last[0] = event
                loop.call_soon_threadsafe(events.put_nowait, event)

        def run() -> Any:
            # Load options and a checkpoint come with the request; the manager reloads only when
            # they differ from what the replica holds (decode options never reload).
            self.manager.options = {self.model_id: options} if options is not None else {}
            self.manager.checkpoints = {self.model_id: Path(checkpoint)} if checkpoint else {}
            settled = self.manager.decode_for(self.model_id, decode)  # the same rules as the front end's
            t = self.manager.transcribe(
                self.model_id, clip, settled, progress=lambda done, total: emit("progress", done, total),
                on_loaded=lambda model: emit("loaded", model.num_segments(clip, settled),
                                             str(model.dtype).replace("torch.", "")))
            return dataclasses.replace(t, device=f"ray replica on {t.device}", backend="ray")

        work = loop.run_in_executor(self._worker, run)
        try:
            yield ("started",)
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not events.empty():  # what the worker reported before it returned
                    yield events.get_nowait()
                break
            transcription = work.result()  # raises the run's error, which Serve hands to the caller
            self.counts["completed"] += 1
            yield ("done", transcription)
        finally:
            if not work.done():  # cancelled (Stop, the caller gone): free the replica only when the run stops
                stop.set()
                while not work.done():
                    try:
                        await asyncio.wait({work})
                    except asyncio.CancelledError:
                        continue
            if work.done() and not work.cancelled() and work.exception() is not None:
                kind = "cancelled" if isinstance(work.exception(), Cancelled) else "failed"
                self.counts[kind] += 1

    async def stats(self) -> dict[str, int]:
        """Runs completed, cancelled (stopped at a segment boundary) and failed by this replica."""
        return dict(self.counts)


class ModelIndex:
    """The application's entry deployment: which models this application serves (also over HTTP,
    where ``serve run`` starts Serve's proxy). The front end calls the model deployments directly."""

    def __init__(self, model_ids: list[str], *deployments: Any) -> None:
        self.model_ids = list(model_ids)
        self.deployments = deployments  # bound so that Serve deploys them with this application

    async def __call__(self, request: Any = None) -> dict[str, list[str]]:
        return {"models": self.model_ids}


def app(args: Mapping[str, Any] | None = None) -> Any:
    """The Ray Serve application builder (``serve run mt3_demo.serving:app key=value …``, the
    ``import_path`` of deploy/serve.yaml, or ``serve.run(app({...}))``): one deployment per model
    (named by its id) behind :class:`ModelIndex`. Arguments: :func:`parse_args`."""
    import ray
    from ray import serve

    from .registry import load_registry

    specs, _ = load_registry()
    config = parse_args(args, list(specs), _cluster_gpus(ray))
    deployments = [serve.deployment(ModelReplica).options(**config.replicas[m].deployment_options(m, config.env))
                   .bind(m) for m in config.models]
    index = serve.deployment(ModelIndex).options(name=INGRESS, num_replicas=1, ray_actor_options={"num_cpus": 0})
    return index.bind(list(config.models), *deployments)


def _cluster_gpus(ray: Any) -> float:
    """GPUs of the cluster this builder runs for: Ray's count when connected (``serve run`` and
    Serve configs build on the cluster), else this machine's CUDA devices."""
    if ray.is_initialized():
        return float(ray.cluster_resources().get("GPU", 0))
    import torch

    return float(torch.cuda.device_count())
