"""Issue 13 item 8: the manager budgets what a run really needs (measured), not only weights."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from mt3_demo import memory
from mt3_demo.audio import Clip
from mt3_demo.manager import ModelManager

sys.path.insert(0, str(Path(__file__).parent))
from test_manager import fake_spec  # noqa: E402


def manager_with(specs, budget_mb: float) -> ModelManager:
    return ModelManager(device=torch.device("cpu"), budget_mb=budget_mb, specs={s.id: s for s in specs})


def test_a_run_makes_room_for_its_measured_memory():
    """Weights alone (transkun: 54 MB) fit easily; its run needs ~0.6 GB more, so an idle model goes."""
    clip = Clip.from_array(np.zeros(16000 * 60, np.float32))  # one minute
    need = memory.run_mb("transkun", clip.duration)
    assert need >= 500  # the measured per-run peak, ten times the weights
    m = manager_with([fake_spec("other", megabytes=200.0), fake_spec("transkun", megabytes=1.0)],
                     budget_mb=need + 150.0)
    m.get("other")
    m.transcribe("transkun", clip)
    assert m.loaded_ids() == ["transkun"]  # "other" was unloaded to make room for the run
    assert m._running_mb == 0.0  # the run's share is released when it ends


def test_runs_in_progress_count_against_the_budget():
    m = manager_with([fake_spec("a", megabytes=10.0)], budget_mb=500.0)
    m.get("a")
    m._running_mb = 480.0  # another request's run in progress
    m._make_room(20.0)
    assert m.loaded_ids() == []  # the idle model made room
    assert memory.run_mb("unknown-model", 600.0) == 0.0  # outside the registry: weights only
    long, short = memory.run_mb("transkun", 600.0), memory.run_mb("transkun", 10.0)
    assert long > short  # grows with the audio
