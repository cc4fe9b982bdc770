"""The ray backend: the model manager's role played by the deployments of a Ray Serve cluster.

:class:`RayManager` has the methods the pipeline, the page and the CLI call on
:class:`~mt3_demo.manager.ModelManager` (``spec``, ``model_ids``, ``availability``,
``availabilities``, ``check``, ``decode_for``, ``default_selection``, ``loaded_ids``, ``transcribe``,
``unload_idle``, ``preload``; ``settings``, ``options``, ``checkpoints``), so everything above the
manager runs unchanged (``MT3_DEMO_BACKEND=ray``). A
transcription sends the :class:`~mt3_demo.audio.Clip` (its samples and the decoded original, no
path) to the model's deployment (:mod:`mt3_demo.serving`) as a streaming request and relays what the
replica reports: "waiting for a free … replica" while the request is queued, then the model's own
phases. A :class:`~mt3_demo.pipeline.Cancelled` raised by a callback (Stop) cancels the remote
request. Cluster trouble becomes one sentence with the fix (:class:`~mt3_demo.manager.BackendError`
for a run, an unavailable :class:`~mt3_demo.manager.Availability` for the list) within seconds:
every call into Ray that could wait on the network has a time limit.

Ray is imported on first use: the default install has no Ray, and this module imports without it.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .audio import Clip
from .availability import Availability
from .manager import BackendError, run_decode
from .models.base import ModelSpec, ProgressFn
from .notes import Transcription
from .options import Settings
from .registry import default_selection, load_registry, spec_of
from .serving import APP_NAME

log = logging.getLogger(__name__)

CONNECT_S = 8.0  # joining the cluster (ray.init); a dead address is refused long before
STATUS_S = 5.0  # asking Serve which deployments run
STATUS_TTL_S = 2.0  # one status answers every question of a page load
RETRY_S = 10.0  # after a failed connection, how long the answer stands before trying again
WAIT_NOTICE_S = 0.5  # a request not started by then is waiting for a replica: say so
POLL_S = 1.0  # while waiting, how often the callbacks hear from us (so Stop is noticed)
SERVING_STATES = ("HEALTHY", "UPSCALING", "DOWNSCALING")  # replicas up, their model loaded
STARTING_STATES = ("UPDATING",)  # replicas being started: requests wait for them
HOW_TO_DEPLOY = "serve run deploy/serve.yaml (or serve run mt3_demo.serving:app models=…) on the cluster"
# Ray (2.5x on) turns token authentication on for clusters it starts, but a client joining at an
# explicit address sends the token only when told to.
NEEDS_TOKEN = "it asks for Ray's authentication token"
HOW_TO_AUTHENTICATE = ("run this with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token (or "
                       "RAY_AUTH_TOKEN), as on the cluster's nodes")


@dataclass(frozen=True)
class _Deployment:
    app: str
    status: str
    message: str
    replicas: int


@dataclass(frozen=True)
class _Cluster:
    """What Serve said, or why it could not be asked (``down``: one sentence, ``fix``)."""

    deployments: dict[str, _Deployment]
    down: str = ""
    fix: str = ""


class _RemoteModel:
    """What ``on_loaded`` callbacks read of a loaded model, reported by the replica."""

    def __init__(self, segments: int, dtype: str) -> None:
        self.segments, self.dtype, self.device = segments, dtype, "ray replica"

    def num_segments(self, clip: Clip, decode: Any = None) -> int:
        return self.segments  # the replica counted them with this run's clip and decode options


def _within(seconds: float, fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` on a helper thread, or TimeoutError after ``seconds`` (Ray calls that wait on a
    network must not hang a page; the thread is left to finish on its own)."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    thread = threading.Thread(target=call, name=f"mt3-demo-ray-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"{what} took longer than {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _refuses(address: str) -> str:
    """Why a ``host:port`` address cannot be a cluster (nothing listens there), else ""."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].rpartition(":")
    if not host or not port.isdigit():
        return ""  # "auto", "local" or something Ray will judge
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return ""
    except OSError as e:
        return e.strerror or type(e).__name__


class RayManager:
    """A :class:`~mt3_demo.manager.ModelManager` stand-in whose models run on Ray Serve replicas.

    ``options`` and ``checkpoints`` (set by the CLI as on the local manager) travel with each
    request, and so do a run's decode options; the replica reloads only when the load options or
    the checkpoint differ from what it holds. The cluster is ``settings.ray_address`` (Ray's:
    ``auto``, the cluster started on this machine; ``host:6379``; ``ray://host:10001``); the replicas
    find weights with their own settings (:mod:`mt3_demo.serving`).
    """

    backend = "ray"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings(backend="ray")
        self.address = self.settings.ray_address
        self.specs, self.import_errors = load_registry()
        self.options: dict[str, Any] = {}  # model id -> load options
        self.checkpoints: dict[str, Path] = {}
        self.decode: dict[str, Any] = {}  # model id -> decode options when a run gives none
        self._lock = threading.Lock()  # one connection attempt and one status request at a time
        self._connected = False
        self._cluster: _Cluster | None = None
        self._asked = 0.0  # when _cluster was asked
        self._handles: dict[tuple[str, str], Any] = {}  # one handle per deployment: one router, one queue count

    # ------------------------------------------------------------------ registry (the local one)

    def model_ids(self) -> list[str]:
        return list(self.specs)

    def spec(self, model_id: str) -> ModelSpec:
        return spec_of(self.specs, model_id)

    def decode_for(self, model_id: str, decode: Any = None) -> Any:
        """A run's decode options, checked here by the local manager's rules before they travel."""
        return run_decode(self.spec(model_id), decode if decode is not None else self.decode.get(model_id),
                          self.settings)

    # ------------------------------------------------------------------ the cluster

    def _connect(self) -> str:
        """Join the cluster (once); returns why it cannot be joined, or ""."""
        if self._connected:
            return ""
        try:
            import ray
        except ImportError:
            return "Ray is not installed here"
        if ray.is_initialized():  # this process already belongs to a cluster (a test, a driver)
            self._connected = True
            return ""
        refused = _refuses(self.address)
        if refused:
            return f"nothing answers at {self.address} ({refused})"
        try:
            # ERROR: Ray's warnings about joining from a helper thread are not for the page's log.
            _within(CONNECT_S, lambda: ray.init(address=self.address, logging_level=logging.ERROR,
                                                log_to_driver=False, ignore_reinit_error=True), "ray.init")
        except TimeoutError:  # also what a cluster asking for a token we do not send looks like
            return f"{self.address} did not let this process join within {CONNECT_S:.0f} s"
        except Exception as e:  # noqa: BLE001 - any failure to join is one sentence
            if type(e).__name__ == "AuthenticationError":  # ray.exceptions.AuthenticationError
                return NEEDS_TOKEN
            return f"it cannot be joined ({type(e).__name__})"
        self._connected = True
        return ""

    def cluster(self, fresh: bool = False) -> _Cluster:
        """Which models have a deployment and in what state (asked at most every STATUS_TTL_S;
        after a failure, the failure stands for RETRY_S)."""
        with self._lock:
            age = time.monotonic() - self._asked
            if self._cluster is not None and not fresh and age < (RETRY_S if self._cluster.down else STATUS_TTL_S):
                return self._cluster
            self._cluster = self._ask()
            self._asked = time.monotonic()
            return self._cluster

    def _ask(self) -> _Cluster:
        where = f"The Ray cluster at {self.address}"
        why = self._connect()
        if why == "Ray is not installed here":
            return _Cluster({}, "Ray is not installed here (MT3_DEMO_BACKEND=ray).",
                            "pip install -r requirements-scale.txt, or use MT3_DEMO_BACKEND=local")
        if why == NEEDS_TOKEN:
            return _Cluster({}, f"{where} cannot be joined: {why}.", HOW_TO_AUTHENTICATE)
        if why:
            return _Cluster({}, f"{where} cannot be reached: {why}.",
                            f"start it (ray start --head), deploy the models ({HOW_TO_DEPLOY}) and set RAY_ADDRESS "
                            "to its address (a cluster that asks for Ray's token: also RAY_AUTH_MODE=token); or use "
                            "MT3_DEMO_BACKEND=local")
        from ray import serve

        try:
            status = _within(STATUS_S, serve.status, "serve.status")
        except Exception as e:  # noqa: BLE001 - a timeout or a Serve error, said in one sentence
            return _Cluster({}, f"{where} did not say which models it serves ({type(e).__name__}).",
                            f"check that Ray Serve runs there: {HOW_TO_DEPLOY}")
        found: dict[str, _Deployment] = {}
        for app_name, application in status.applications.items():
            for name, d in application.deployments.items():
                if name not in self.specs:
                    continue
                state = str(getattr(d.status, "value", d.status))
                replicas = sum(n for s, n in d.replica_states.items() if str(getattr(s, "value", s)) == "RUNNING")
                candidate = _Deployment(app_name, state, d.message, replicas)
                best = found.get(name)  # several applications may serve a model: prefer one that serves
                if best is None or (best.status not in SERVING_STATES and state in SERVING_STATES) \
                        or app_name == APP_NAME and state in SERVING_STATES:
                    found[name] = candidate
        return _Cluster(found)

    # ------------------------------------------------------------------ what the page lists

    def availability(self, model_id: str) -> Availability:
        spec = self.spec(model_id)
        cluster = self.cluster()
        if cluster.down:
            return Availability("unavailable", cluster.down, cluster.fix)
        d = cluster.deployments.get(model_id)
        if d is None:
            return Availability("unavailable", f"No Ray Serve deployment runs {spec.display_name} on the cluster.",
                                f"add {model_id} to the models of deploy/serve.yaml and run {HOW_TO_DEPLOY}")
        if d.status in SERVING_STATES:
            return Availability("ready", f"served by {d.replicas} Ray replica(s)",
                                weights=f"on the Ray cluster ({d.replicas} replica{'' if d.replicas == 1 else 's'})")
        if d.status in STARTING_STATES:
            return Availability("ready", "its Ray replicas are starting", weights="on the Ray cluster (starting)")
        first = (d.message.strip().splitlines() or [""])[0][:200]
        return Availability("unavailable", f"Its Ray Serve deployment is {d.status.lower().replace('_', ' ')}.",
                            first or f"see `serve status` on the cluster, then {HOW_TO_DEPLOY}")

    def check(self, model_id: str) -> Availability:
        """The one question before a run: "loaded" when the deployment serves (a replica loads its
        model before it takes requests), else :meth:`availability`."""
        avail = self.availability(model_id)
        deployment = self.cluster().deployments.get(model_id)
        if avail.usable and deployment is not None and deployment.status in SERVING_STATES:
            return Availability("loaded", avail.reason, weights=avail.weights)
        return avail

    def availabilities(self) -> dict[str, Availability]:
        return {model_id: self.availability(model_id) for model_id in self.specs}

    def default_selection(self, avail: dict[str, Availability] | None = None) -> list[str]:
        return default_selection(list(self.specs), avail if avail is not None else self.availabilities())

    def loaded_ids(self) -> list[str]:
        """Models whose replicas are up: a replica loads its model before it takes requests."""
        return [m for m, d in self.cluster().deployments.items() if d.status in SERVING_STATES]

    def unload_idle(self) -> None:
        """Nothing to free here: each replica holds one model and manages its own memory."""

    def preload(self, model_ids: list[str] | None = None) -> dict[str, str]:
        """Replicas load their model when they start; nothing to load in the front end."""
        return {}

    # ------------------------------------------------------------------ inference

    def _handle(self, model_id: str, app: str) -> Any:
        with self._lock:
            if (app, model_id) not in self._handles:
                from ray import serve

                self._handles[app, model_id] = serve.get_deployment_handle(model_id, app, _check_exists=False)
            return self._handles[app, model_id]

    def transcribe(self, model_id: str, clip: Clip, decode: Any = None, progress: ProgressFn | None = None,
                   on_loaded: Callable[[Any], None] | None = None,
                   on_wait: Callable[[str], None] | None = None) -> Transcription:
        """Run on a replica of the model's deployment, relaying its events to the callbacks.

        A callback that raises (:class:`~mt3_demo.pipeline.Cancelled` on Stop) cancels the remote
        request and the exception propagates. The replica's own errors (a missing checkpoint, bad
        options, out of memory) are raised as they were raised there; Ray's become
        :class:`~mt3_demo.manager.BackendError`.
        """
        spec = self.spec(model_id)
        decode = self.decode_for(model_id, decode)  # checked here; the replica checks it again
        cluster = self.cluster()
        if cluster.down:
            raise BackendError(f"{cluster.down} To fix: {cluster.fix}")
        deployment = cluster.deployments.get(model_id)
        if deployment is None:
            avail = self.availability(model_id)
            raise BackendError(f"{avail.reason} To fix: {avail.fix}")
        handle = self._handle(model_id, deployment.app)
        checkpoint = self.checkpoints.get(model_id)
        wire = dataclasses.replace(clip, path=None, warnings=[])  # samples and original only: no server path
        # The options are plain dataclasses of mt3_demo.options: they travel as they are.
        request = handle.options(stream=True).transcribe.remote(
            wire, self.options.get(model_id), str(checkpoint) if checkpoint else None, decode)
        events: queue.Queue = queue.Queue()

        def pump() -> None:  # Ray's iterator blocks: it runs here, the caller's thread polls
            try:
                for event in request:
                    events.put(("event", event))
                events.put(("end", None))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                events.put(("error", e))

        threading.Thread(target=pump, name=f"mt3-demo-ray-{model_id}", daemon=True).start()
        sent, started = time.monotonic(), False
        try:
            while True:
                try:
                    kind, item = events.get(timeout=WAIT_NOTICE_S if not started else POLL_S)
                except queue.Empty:
                    if not started and on_wait is not None and time.monotonic() - sent >= WAIT_NOTICE_S:
                        on_wait(f"waiting for a free {spec.display_name} replica")
                    continue
                if kind == "error":
                    raise _for_people(item, spec.display_name)
                if kind == "end":
                    raise BackendError(f"The {spec.display_name} replica ended the request without a result; "
                                       "try again.")
                started = True
                name, *values = item
                if name == "loaded" and on_loaded is not None:
                    on_loaded(_RemoteModel(*values))
                elif name == "progress" and progress is not None:
                    progress(*values)
                elif name == "done":
                    return values[0]
        except BaseException:
            try:
                request.cancel()  # Stop, or an error here: the replica stops at its next segment
            except Exception:  # noqa: BLE001 - a request that never started re-raises its own error here
                pass
            raise


def _for_people(error: BaseException, name: str) -> BaseException:
    """What a failed remote run raises here: the replica's own exception as it was raised there, or a
    :class:`BackendError` saying what happened to the replica or the cluster."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    cause = getattr(error, "cause", None)
    if isinstance(error, ray_errors.RayTaskError) and isinstance(cause, Exception):
        return cause  # CheckpointError, OptionError, out of memory, an adapter's bug: as on the local path
    if isinstance(error, serve_errors.BackPressureError):
        return BackendError(f"Every {name} replica is busy and its queue is full; try again in a minute.")
    if isinstance(error, (ray_errors.RayActorError, serve_errors.ReplicaUnavailableError,
                          ray_errors.WorkerCrashedError, ray_errors.NodeDiedError)):
        return BackendError(f"The {name} replica stopped during this run (its process ended); Ray Serve starts a "
                            "new one, so try again in a moment.")
    if isinstance(error, serve_errors.DeploymentUnavailableError):
        return BackendError(f"The {name} deployment is gone from the Ray cluster. To fix: {HOW_TO_DEPLOY}.")
    if isinstance(error, ray_errors.RayError):
        return BackendError(f"The Ray cluster could not run {name} ({type(error).__name__}); try again.")
    return error
