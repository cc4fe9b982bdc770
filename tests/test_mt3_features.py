"""MT3 frontend vs TensorFlow ground truth (docs/models.md#mt3-frontend, fixtures/mt3/logmel)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from numerics import assert_within, mel_log_tolerance, stft_magnitude64

from mt3_demo.models.mt3 import features as F

FIX = Path(__file__).parent / "fixtures" / "mt3" / "logmel"


def load_signal(name):
    x, sr = sf.read(FIX / f"signal_{name}.wav", dtype="float32")
    assert sr == 16000
    return x


def test_mel_matrix_matches_tf():
    z = np.load(FIX / "mel_matrix_512.npz")
    expected = np.zeros(tuple(z["shape"]), np.float32)
    expected[z["rows"], z["cols"]] = z["values"]
    got = F.mel_matrix(512).numpy()
    assert got.shape == expected.shape == (1025, 512)
    # same triangles: identical support, values equal to float32 rounding of TF's own ops
    np.testing.assert_array_equal(got != 0, expected != 0)
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=0)
    assert np.all(got[0] == 0)  # DC row
    assert np.all(got[:, 1] == 0) and np.all(got[:, 10] == 0)  # bands between FFT bins


def oracle_logmel(x: np.ndarray, bins: int):
    """Float64 oracle of the TF frontend's log-mel and its per-element float32 bound (each segment
    is its own signal: 32768 samples plus 1920 zeros, frames of 2048 every 128)."""
    n = F.num_segments(len(x)) * F.SEGMENT_SAMPLES
    seg = torch.nn.functional.pad(torch.from_numpy(x).double(), (0, n - len(x))).view(-1, F.SEGMENT_SAMPLES)
    frames = torch.nn.functional.pad(seg, (0, F.FFT_SIZE - F.HOP)).unfold(-1, F.FFT_SIZE, F.HOP)
    window = torch.hann_window(F.FFT_SIZE, periodic=True, dtype=torch.float64)
    return mel_log_tolerance(stft_magnitude64(frames, window), F.mel_matrix(bins), F.FFT_SIZE)


@pytest.mark.parametrize("name", ["a", "b"])
@pytest.mark.parametrize("bins", [512, 64])
def test_logmel_matches_tf(name, bins):
    x = load_signal(name)
    meta = json.loads((FIX / f"signal_{name}_meta.json").read_text())
    expected = np.load(FIX / f"signal_{name}_logmel{bins}.npy")
    got = F.LogMel(bins, log_floor="zero")(x).numpy()
    assert got.shape == expected.shape
    assert F.valid_frames(len(x)) == meta["valid_frames_per_segment"]
    valid = np.zeros(expected.shape[:2], bool)
    for k, v in enumerate(meta["valid_frames_per_segment"]):
        valid[k, :v] = True
    # padding rows are exact zeros
    assert np.all(got[~valid] == 0.0) and np.all(expected[~valid] == 0.0)
    _, tol = oracle_logmel(x, bins)
    # Signal a is a chirp plus a three-note chord: most of its mel bands lie below the worst-case
    # rounding level of their frame's FFT, so only about a quarter of its values carry information.
    assert_within(got[valid], expected[valid], tol.numpy()[valid], f"signal {name}, {bins} bins",
                  min_compared=0.25 if name == "a" else 0.5)
    # The "zero" rule: bands with no FFT bin under them (mel exactly 0 on every machine) are set
    # to ln(1e-5); tiny but non-zero mels keep their own log (far below ln 1e-5, not clamped to it).
    empty = F.mel_matrix(bins).sum(0) == 0
    if bins == 512:
        assert bool(empty.any()) and np.all(got[valid][:, empty.numpy()] == np.float32(math.log(1e-5)))
    if bins == 512 and meta["logmel_min"] < math.log(1e-5) - 1:
        assert (got[valid] < math.log(1e-5) - 1).any()


def test_clamp_floor_only_changes_values_below_1e5():
    x = load_signal("b")
    zero = F.LogMel(64, log_floor="zero")(x)
    clamp = F.LogMel(64, log_floor="clamp")(x)
    floor = math.log(1e-5)
    assert torch.all(clamp[zero != 0] >= floor - 1e-6)
    same = zero > floor
    assert torch.equal(clamp[same], zero[same])
    assert bool((zero < floor - 1).any())  # the 1e-7 noise tail of signal b


def test_segments_and_start_times():
    for name in "ab":
        meta = json.loads((FIX / f"signal_{name}_meta.json").read_text())
        n = meta["n_samples"]
        assert F.frame_count(n) == meta["n_frames"]
        assert F.num_segments(n) == meta["n_segments"]
        assert F.segment_start_times(meta["n_segments"]) == meta["segment_start_time_rounded"]
    # whole-frame padding quirk: a multiple of 128 still gets an extra frame
    assert F.frame_count(128 * 256) == 257 and F.num_segments(128 * 256) == 2
    assert F.segment_start_times(7) == [0.0, 2.04, 4.09, 6.140000000000001, 8.19, 10.24, 12.280000000000001]


def test_segment_ranges_equal_whole_file():
    x = load_signal("a")
    fe = F.LogMel(64)
    whole = fe(x)
    parts = torch.cat([fe(x, 0, 1), fe(x, 1, 2)])
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=0)
