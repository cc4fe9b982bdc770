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


@pytest.mark.slow
def test_tracks_scored_in_groups_give_the_wheels_own_notes(model, tmp_path):
    """Our path scores and decodes a few pitch tracks at a time (bounded memory); the wheel's own
    ``transcribe`` scores all 90 at once. On 20 s of the piano example both give the same notes."""
    from mt3_demo.models.transkun import TRACKS_PER_GROUP

    x, sr = sf.read(EXAMPLES / "piano_cschumann_polonaise.wav", dtype="float32")
    path = tmp_path / "p.wav"
    sf.write(path, x[: 20 * sr], sr)
    clip = load_clip(path)
    tracks_per_call = []
    hook = model.model.scorer.register_forward_hook(lambda m, args, out: tracks_per_call.append(args[0].shape[1]))
    try:
        ours = model.transcribe(clip).notes
        assert "processFramesBatch" not in vars(model.model)  # the wheel's own method is back in place
        ours_calls, tracks_per_call[:] = list(tracks_per_call), []
        audio = torch.from_numpy(np.ascontiguousarray(clip.original_mono(model.rate)))[:, None]
        with torch.inference_mode():
            segment_s, hop_s = model._windows(None)  # the defaults transcribe(clip) used
            events = model.model.transcribe(audio, stepInSecond=hop_s, segmentSizeInSecond=segment_s)
    finally:
        hook.remove()
    segments = model.num_segments(clip)
    assert ours_calls and max(ours_calls) == TRACKS_PER_GROUP and sum(ours_calls) == 90 * segments
    assert tracks_per_call == [90] * segments  # the wheel: every track of a segment in one matrix
    wheel = sorted((int(e.pitch), float(e.start), float(e.end), int(e.velocity)) for e in events if e.pitch >= 0)
    assert len(wheel) > 50
    # Exact: each track's scores come from the same float32 kernels on the same inputs (a batched
    # matmul per track, elementwise ops, a per-track max in the decoder), only fewer tracks per call.
    assert sorted((n.pitch, n.onset, n.offset, n.velocity) for n in ours) == wheel
