"""The embedded default loads strictly from its wheel and reports progress per segment."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import EXAMPLES
from mt3_demo.audio import load_clip
from mt3_demo.checkpoints import CheckpointError
from mt3_demo.models.transkun import SPEC


@pytest.fixture(scope="module")
def model():
    return SPEC.build(SPEC.resolve(None), torch.device("cpu"), {})


def test_resolves_inside_the_wheel_and_rejects_missing_folder(tmp_path):
    folder = SPEC.resolve(None)
    assert (folder / "2.0.pt").is_file() and (folder / "2.0.conf").is_file()
    with pytest.raises(CheckpointError, match="2.0.pt not found"):
        SPEC.resolve(tmp_path)


@pytest.mark.slow
def test_piano_excerpt_progress_and_notes(model, tmp_path):
    x, sr = sf.read(EXAMPLES / "piano_cschumann_polonaise.wav", dtype="float32")
    path = tmp_path / "p.wav"
    sf.write(path, x[: 3 * sr], sr)
    clip = load_clip(path)
    calls = []
    out = model.transcribe(clip, progress=lambda done, total: calls.append((done, total)))
    total = model.num_segments(clip)
    assert calls and calls[-1] == (total, total)
    assert [c[0] for c in calls] == list(range(1, total + 1))
    assert len(out.notes) > 5
    assert all(n.program == 0 and not n.is_drum and 21 <= n.pitch <= 108 for n in out.notes)
    assert all(0 <= n.onset <= n.offset for n in out.notes)


def test_silence_gives_no_notes(model):
    from mt3_demo.audio import Clip

    out = model.transcribe(Clip.from_array(np.zeros(16000, np.float32)))
    assert out.notes == []
