"""``evaluate --ray``: the same per-track function on a Ray cluster.

Each model gets ``workers_per_model`` actors (:class:`TrackWorker`); an actor builds its own
:class:`~mt3_demo.manager.ModelManager` from the run's recipe, loads its model once and evaluates
tracks one after another with :func:`~mt3_demo.evaluate.track.evaluate_track` — the function the
local run calls, so the lines are the same. The driver keeps every actor two tracks deep (the next
one is queued while the current one runs), and writes each MIDI file and line as its result comes
back: the output folder only has to exist on the driver's machine. The recordings are read by the
actors, so the dataset must be at the same path on every node (a shared or copied folder, as for
any Ray job over files).

An actor asks Ray for ``gpus_per_model`` GPUs (0 on a CPU cluster; 1 for a model per card; 0.5
lets two small models share one) and ``cpus_per_worker`` CPUs, and runs torch with that many
threads, so actors on one machine do not fight over its cores.
"""
from __future__ import annotations

import dataclasses
import sys
from collections import deque
from typing import Any, Callable

from .datasets import Track
from .track import TrackResult, evaluate_track

IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: no idle gap while the driver handles a result


class TrackWorker:
    """One model on one Ray worker (plain Python: wrapped by ``ray.remote`` in :func:`run_on_ray`)."""

    def __init__(self, recipe: Any, model_id: str) -> None:
        self.manager = recipe.build()
        self.model_id = model_id

    def evaluate(self, track: Track, decode: Any, max_seconds: float) -> TrackResult:
        return evaluate_track(track, self.model_id, self.manager, decode, max_seconds)


def _connect(ray: Any, address: str) -> bool:
    """Join the cluster at ``address``; with "auto" and none running, start one on this machine.
    Returns whether this call started Ray (and so must shut it down). A session already started
    in this process (a test, a notebook) is used as it is."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError:
        if address != "auto":
            from .run import EvaluateError

            raise EvaluateError(f"--ray: no Ray cluster answers at {address} (RAY_ADDRESS).") from None
        print("evaluate: no Ray cluster running (RAY_ADDRESS unset); starting one on this machine.",
              file=sys.stderr)
        ray.init(include_dashboard=False, log_to_driver=False)
    return True


def run_on_ray(job: Any, todo: list[tuple[Track, str]], record: Callable[[TrackResult], None], plan: Any) -> None:
    import ray

    started = _connect(ray, plan.address)
    # Each worker runs torch on as many threads as it has CPUs (not on every core of its node).
    threads = max(1, int(plan.cpus_per_worker))
    recipe = dataclasses.replace(job.recipe, settings=dataclasses.replace(job.recipe.settings, threads=threads))
    worker = ray.remote(TrackWorker).options(num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_model)
    models = [m for m in job.model_ids if any(mm == m for _, mm in todo)]
    queues = {m: deque(t for t, mm in todo if mm == m) for m in models}
    actors = {m: [worker.remote(recipe, m) for _ in range(plan.workers_per_model)] for m in models}
    in_flight: dict[Any, tuple[Any, str, Track]] = {}

    def submit(actor: Any, model_id: str) -> None:
        if queues[model_id]:
            track = queues[model_id].popleft()
            ref = actor.evaluate.remote(track, job.decode.get(model_id), job.max_seconds)
            in_flight[ref] = (actor, model_id, track)

    try:
        for m in models:
            for actor in actors[m]:
                for _ in range(IN_FLIGHT_PER_ACTOR):
                    submit(actor, m)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            actor, model_id, track = in_flight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayError as e:  # the actor died (out of memory, node lost...)
                result = TrackResult({"track": track.rel, "model": model_id, "error_kind": "worker",
                                      "error": f"the Ray worker failed: {type(e).__name__}: {e}"[:2000]}, None)
            record(result)
            submit(actor, model_id)
    finally:
        for group in actors.values():
            for actor in group:
                ray.kill(actor)
        if started:
            ray.shutdown()
