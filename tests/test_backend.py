"""Choosing where the models run (issue 22), without Ray: the settings, the Serve builder's
arguments, and the default install (no Ray) keeping its local path."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from mt3_demo import serving
from mt3_demo.manager import ModelManager, manager_for
from mt3_demo.options import MT3Decode, OptionError, Settings, read_env, settings_from_env
from mt3_demo.remote import RayManager

MODELS = ["transkun", "mt3", "mr_mt3", "yourmt3"]


def test_backend_and_ray_address_come_from_the_environment():
    s = settings_from_env({"MT3_DEMO_BACKEND": "Ray", "RAY_ADDRESS": "10.0.0.5:6379"})
    assert (s.backend, s.ray_address) == ("ray", "10.0.0.5:6379")
    assert (Settings().backend, Settings().ray_address) == ("local", "auto")
    settings, problems = read_env({"MT3_DEMO_BACKEND": "spark"})
    assert settings.backend == "local"
    assert problems == ["MT3_DEMO_BACKEND='spark' is not usable: backend must be one of local, ray, not 'spark'."]
    assert isinstance(manager_for(Settings()), ModelManager)


def test_decode_options_are_checked_by_the_local_rules_before_they_travel():
    """A run's decode options reach a replica as the dataclass the local manager would use: a
    mapping is turned into it, a misspelt name is refused here (no cluster is asked)."""
    remote = RayManager(Settings(backend="ray", ray_address="127.0.0.1:1", cuda_graphs=False))
    assert remote.decode_for("mt3", {"max_tokens": 24}) == MT3Decode(max_tokens=24, cuda_graphs=False)
    remote.decode = {"mt3": MT3Decode(max_tokens=7)}
    assert remote.decode_for("mt3").max_tokens == 7
    with pytest.raises(OptionError, match="unknown option 'max_token'"):
        remote.transcribe("mt3", None, {"max_token": 24})
    assert remote._cluster is None  # refused before the cluster was asked


def test_builder_arguments_per_model_and_their_defaults(monkeypatch):
    monkeypatch.setenv("MT3_DEMO_CHECKPOINTS", "/data/ckpt")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    config = serving.parse_args({"models": "transkun, mt3", "mt3.num_gpus": "0.25", "transkun.max_replicas": "3",
                                 "HF_HUB_OFFLINE": "1"}, MODELS, cluster_gpus=2)
    assert config.models == ("transkun", "mt3")
    assert config.env == {"MT3_DEMO_CHECKPOINTS": "/data/ckpt", "HF_HUB_OFFLINE": "1"}
    t, m = config.replicas["transkun"], config.replicas["mt3"]
    assert (t.num_gpus, m.num_gpus) == (1.0, 0.25)  # one GPU where the cluster has GPUs; fractions allowed
    options = t.deployment_options("transkun", config.env)
    assert options["max_ongoing_requests"] == 1 and options["max_queued_requests"] == serving.MAX_QUEUED
    assert options["autoscaling_config"]["min_replicas"] == 1 and options["autoscaling_config"]["max_replicas"] == 3
    assert options["ray_actor_options"]["runtime_env"] == {"env_vars": config.env}
    assert m.deployment_options("mt3", {})["num_replicas"] == 1
    cpu_only = serving.parse_args({}, MODELS, cluster_gpus=0)
    assert cpu_only.models == tuple(MODELS) and {r.num_gpus for r in cpu_only.replicas.values()} == {0.0}


@pytest.mark.parametrize("args, message", [
    ({"models": "mt3,whisper"}, "models: whisper — known models are"),
    ({"num_gpus": "one"}, "transkun.num_gpus must be a number, not 'one'."),
    ({"min_replicas": 2, "max_replicas": 1}, "transkun.max_replicas must be at least 2, not 1."),
    ({"replicas": 2}, "unknown argument(s) replicas"),
])
def test_bad_builder_arguments_say_which_and_why(args, message):
    with pytest.raises(OptionError) as e:
        serving.parse_args(args, MODELS, cluster_gpus=0)
    assert str(e.value).startswith(message)


def test_without_ray_the_package_imports_and_runs_locally_and_the_ray_backend_says_how_to_get_it():
    code = """
import json, sys
sys.modules["ray"] = None  # not installed
import mt3_demo, mt3_demo.cli, mt3_demo.remote, mt3_demo.serving
from mt3_demo.audio import Clip
from mt3_demo.manager import manager_for
from mt3_demo.options import Settings
import numpy as np
local = manager_for(Settings())
clip = Clip.from_array(np.zeros(16000, dtype=np.float32))
t = local.transcribe("transkun", clip)
avail = manager_for(Settings(backend="ray")).availability("transkun")
print(json.dumps({"backend": t.backend, "status": avail.status, "reason": avail.reason, "fix": avail.fix}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["backend"] == "local"
    assert data["status"] == "unavailable" and data["reason"].startswith("Ray is not installed here")
    assert "requirements-scale.txt" in data["fix"]
