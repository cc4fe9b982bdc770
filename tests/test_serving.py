"""The ray backend end to end (issue 22): a test-started local Ray cluster serves the four models
through mt3_demo.serving's builder, and mt3_demo.remote.RayManager runs them for the pipeline.

One module-scoped cluster (2 CPUs, no dashboard, no HTTP proxy); the replicas take no CPU of Ray's
count so the four of them fit. Both sides run one torch thread (MT3_DEMO_THREADS=1, forwarded to the
replicas), so "the same code on the same device" is also the same summation order: notes compare
exactly. MT3 serves with a queue of one request, so "busy" and "full" are reachable with three.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from conftest import EXAMPLES, FIXTURES, ROOT  # noqa: E402
from mt3_demo import pipeline, serving, writers  # noqa: E402
from mt3_demo.audio import Clip, load_clip  # noqa: E402
from mt3_demo.manager import BackendError, ModelManager  # noqa: E402
from mt3_demo.options import MRMT3Decode, MT3Decode, Settings, YourMT3Decode, settings_from_env  # noqa: E402
from mt3_demo.remote import RayManager  # noqa: E402

MODELS = ["transkun", "mt3", "mr_mt3", "yourmt3"]
# Tiny random-weight checkpoints never emit EOS: a short token limit keeps their runs short. Decode
# options travel with each request (the replica's loaded model stays as it is).
DECODE = {"mt3": MT3Decode(max_tokens=24), "mr_mt3": MRMT3Decode(max_tokens=24),
          "yourmt3": YourMT3Decode(max_tokens=24)}


@pytest.fixture(scope="module")
def checkpoint_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    for model_id, files in {
        "mt3": [FIXTURES / "mt3/tiny_model/mt3.pth", FIXTURES / "mt3/tiny_model/config.json"],
        "mr_mt3": [FIXTURES / "mr_mt3/set_b/model.ckpt", FIXTURES / "mr_mt3/set_b/config.json"],
        "yourmt3": [FIXTURES / "yourmt3/set_a/tiny_model/last.ckpt"],
    }.items():
        (root / model_id).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / model_id / f.name)
    return root


@pytest.fixture(scope="module")
def env(checkpoint_root):
    """The front end's environment, which the builder forwards to the replicas."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MT3_DEMO_CHECKPOINTS", str(checkpoint_root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("MT3_DEMO_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def cluster(env):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(proxy_location="Disabled")
        serve.run(serving.app({"models": ",".join(MODELS), "num_cpus": 0, "mt3.max_queued_requests": 1}),
                  name=serving.APP_NAME)
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def remote(cluster):
    manager = RayManager(Settings(backend="ray"))
    manager.decode = dict(DECODE)
    return manager


@pytest.fixture(scope="module")
def remote_defaults(cluster):
    """A front end that sends no options: the replica runs the models' defaults."""
    return RayManager(Settings(backend="ray"))


@pytest.fixture(scope="module")
def local(env):
    """The same models in this process, with the settings the replicas read (threads, checkpoints)."""
    return ModelManager(device=torch.device("cpu"), decode=dict(DECODE), settings=settings_from_env())


def excerpt(seconds: float) -> Clip:
    """The first seconds of the piano example (its original rate: transkun reads the original)."""
    clip = load_clip(EXAMPLES / "piano_cschumann_polonaise.wav")
    return Clip.from_array(clip.original[: int(seconds * clip.original_rate)], clip.original_rate)


def long_clip(seconds: float = 120.0) -> Clip:
    """Many MT3 segments (2 s each): with the token limit of the weights (1024, reached by random
    weights) a run that takes long enough to be stopped or killed midway."""
    clip = load_clip(EXAMPLES / "piano_cschumann_polonaise.wav")
    reps = int(np.ceil(seconds * clip.original_rate / len(clip.original)))
    return Clip.from_array(np.tile(clip.original, (reps, 1))[: int(seconds * clip.original_rate)], clip.original_rate)


def replica_stats(model_id: str) -> dict:
    """The replica's run counts; answered only when it is free (one request at a time)."""
    handle = serve.get_deployment_handle(model_id, serving.APP_NAME)
    return handle.stats.remote().result(timeout_s=60)


def test_every_model_is_listed_ready_from_the_cluster(remote):
    avail = remote.availabilities()
    assert {m: a.status for m, a in avail.items()} == {m: "ready" for m in MODELS}
    assert "1 replica" in avail["mt3"].weights
    assert sorted(remote.loaded_ids()) == sorted(MODELS)
    assert remote.default_selection(avail) == ["mt3", "mr_mt3", "yourmt3", "transkun"]
    assert remote.check("mt3").status == "loaded"  # a serving replica holds its model: a run just starts


@pytest.mark.parametrize("model_id", MODELS)
def test_notes_through_ray_equal_the_local_run(remote, local, model_id):
    clip = excerpt(3.0) if model_id == "transkun" else load_clip(FIXTURES / "mr_mt3/set_b/audio.wav")
    phases = []
    result = pipeline.transcribe_one(clip, model_id, remote, out_dir=None,
                                     on_progress=lambda m, fraction, phase: phases.append(phase))
    assert result.ok, result.error
    there = result.transcription
    here = local.transcribe(model_id, clip)
    assert there.notes == here.notes  # the same code on the same device: the same notes
    assert there.tokens == here.tokens
    assert (there.backend, there.device, here.backend) == ("ray", "ray replica on cpu", "local")
    assert there.dtype == here.dtype and there.weights == here.weights and there.inference_seconds > 0
    # The page's phases came back from the replica: its segments, then the writing step.
    assert phases[0] == "starting", phases
    assert any(p.startswith("computing features, decoding segment 1 of") for p in phases), phases
    assert phases[-1] == "writing MIDI, piano roll and audio"
    entry = writers.model_entry(result)
    assert entry["backend"] == "ray" and entry["device"] == "ray replica on cpu"


def test_waiting_full_queue_and_stop(remote_defaults):
    """MT3 has one replica and a queue of one: a second request waits (and says so), a third is
    refused at once with a sentence; Stop on the first frees the replica for the second."""
    before = replica_stats("mt3")
    stop_first, first_running = threading.Event(), threading.Event()
    outcome: dict = {}

    def first_progress(done, total):
        first_running.set()
        if stop_first.is_set():
            raise pipeline.Cancelled()

    def first():
        try:
            remote_defaults.transcribe("mt3", long_clip(), progress=first_progress)
            outcome["first"] = "finished"
        except pipeline.Cancelled:
            outcome["first"] = "cancelled"

    waits: list[str] = []

    def second():
        outcome["second"] = remote_defaults.transcribe("mt3", excerpt(2.0), on_wait=waits.append)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_running.wait(120)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    deadline = time.monotonic() + 30
    while not waits and time.monotonic() < deadline:
        time.sleep(0.1)
    assert waits and waits[0] == f"waiting for a free {remote_defaults.spec('mt3').display_name} replica", waits

    with pytest.raises(BackendError, match=r"Every MT3 \(Magenta\) replica is busy and its queue is full"):
        remote_defaults.transcribe("mt3", excerpt(2.0))

    stop_first.set()
    for t in threads:
        t.join(120)
    assert outcome["first"] == "cancelled"
    assert outcome["second"].backend == "ray" and outcome["second"].notes is not None
    after = replica_stats("mt3")
    # The stopped run ended at a segment boundary on the replica (not run to its end), and the
    # waiting one ran after it.
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["completed"] == before["completed"] + 1


def test_a_killed_replica_is_a_card_message_and_the_next_run_works(remote, remote_defaults):
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if "#mt3#" in a["name"] and serving.APP_NAME in a["name"]]
    assert len(names) == 1, names
    started = threading.Event()
    result: dict = {}

    def run():
        result["r"] = pipeline.transcribe_one(long_clip(), "mt3", remote_defaults, out_dir=None,
                                              on_progress=lambda m, f, phase: f > 0 and started.set())

    worker = threading.Thread(target=run)
    worker.start()
    assert started.wait(120)  # segments are done on the replica: the run is under way there
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    worker.join(120)
    r = result["r"]
    assert not r.ok and r.error_kind == "backend"
    assert r.error.startswith("The MT3 (Magenta) replica stopped during this run"), r.error
    # The other models are untouched, and Serve's new MT3 replica takes the next request.
    assert pipeline.transcribe_one(excerpt(2.0), "yourmt3", remote, out_dir=None).ok
    again = pipeline.transcribe_one(excerpt(2.0), "mt3", remote, out_dir=None)
    assert again.ok, again.error


def test_the_serve_config_in_the_repository_is_valid_for_ray():
    yaml = pytest.importorskip("yaml")
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.parse_obj(yaml.safe_load((ROOT / "deploy/serve.yaml").read_text()))
    (application,) = config.applications
    assert application.import_path == "mt3_demo.serving:app"
    assert application.name == serving.APP_NAME


def test_an_unreachable_cluster_is_listed_unavailable_within_seconds():
    code = """
import contextlib, io, json, time
from mt3_demo import cli
from mt3_demo.options import Settings
from mt3_demo.remote import RayManager
start = time.monotonic()
manager = RayManager(Settings(backend="ray", ray_address="127.0.0.1:1"))
avail = manager.availabilities()
seconds = time.monotonic() - start
listing = io.StringIO()
with contextlib.redirect_stdout(listing):
    code = cli.main(["models", "--backend", "ray"])  # the address from RAY_ADDRESS
print(json.dumps({"seconds": seconds, "code": code, "listing": listing.getvalue(),
                  "avail": {m: [a.status, a.reason, a.fix] for m, a in avail.items()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**__import__("os").environ, "RAY_ADDRESS": "127.0.0.1:1"})
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["seconds"] < 10
    assert data["code"] == 0 and data["listing"].count("unavailable") == 4, data["listing"]
    for status, reason, fix in data["avail"].values():
        assert status == "unavailable"
        assert reason.startswith("The Ray cluster at 127.0.0.1:1 cannot be reached"), reason
        assert "ray start --head" in fix
