"""Audio decoding and validation: every bad input gets its own clear message."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from mt3_demo.audio import SAMPLE_RATE, AudioError, Clip, load_clip, resample
from mt3_demo.options import read_env


def test_wav_stereo_44k_is_mixed_and_resampled(tone_wav):
    clip = load_clip(tone_wav(seconds=1.0, rate=44100, channels=2))
    assert clip.sample_rate == SAMPLE_RATE
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert abs(len(clip.samples) - SAMPLE_RATE) <= 1
    assert clip.original.shape == (44100, 2) and clip.original_rate == 44100
    # A 440 Hz tone stays a 440 Hz tone after resampling.
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(clip.samples) - 440) < 2
    assert clip.warnings == []


@pytest.mark.parametrize("fmt,ext,subtype", [("FLAC", "flac", "PCM_16"), ("OGG", "ogg", "VORBIS"),
                                              ("MP3", "mp3", "MPEG_LAYER_III")])
def test_other_formats_decode(tmp_path, fmt, ext, subtype):
    t = np.arange(22050) / 22050
    path = tmp_path / f"a.{ext}"
    try:
        sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 22050, format=fmt, subtype=subtype)
    except (sf.LibsndfileError, ValueError, TypeError) as e:
        pytest.skip(f"this libsndfile cannot write {fmt}: {e}")
    clip = load_clip(path)
    assert 0.9 < clip.duration < 1.2
    assert np.max(np.abs(clip.samples)) > 0.1


def test_16k_mono_is_passed_through_unchanged(tmp_path):
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_clip(path).samples, x)


def test_odd_sample_rate_and_many_channels(tone_wav):
    clip = load_clip(tone_wav(rate=11025, channels=6))
    assert abs(clip.duration - 1.0) < 1e-3 and clip.original.shape[1] == 6


@pytest.mark.parametrize("case,expected", [
    ("none", "No audio given"),
    ("missing", "not found"),
    ("empty", r"is empty \(0 bytes\)"),
    ("text", "not an audio file"),
    ("corrupt_wav", "looks like WAV audio but could not be decoded"),
    ("m4a", "MP4/M4A .* Convert it to WAV"),
    ("folder", "is a folder"),
])
def test_bad_inputs_have_specific_messages(tmp_path, case, expected):
    path = {
        "none": None,
        "missing": tmp_path / "nope.wav",
        "empty": tmp_path / "empty.wav",
        "text": tmp_path / "notes.txt",
        "corrupt_wav": tmp_path / "broken.wav",
        "folder": tmp_path,
        "m4a": tmp_path / "phone.m4a",
    }[case]
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not audio\n" * 10)
    elif case == "m4a":
        path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 200)
    elif case == "corrupt_wav":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    with pytest.raises(AudioError, match=expected):
        load_clip(path)


def test_zero_length_wav(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0, 1)), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_clip(path)


def test_too_short(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, np.zeros(100), 16000)
    with pytest.raises(AudioError, match="too short"):
        load_clip(path)


def test_too_long_is_rejected_with_limit_and_how_to_raise_it(tone_wav):
    path = tone_wav(seconds=3.0)
    with pytest.raises(AudioError, match=r"limit is 2\.0 s.*MT3_DEMO_MAX_SECONDS"):
        load_clip(path, limit_seconds=2.0)
    # The environment's limit reaches the loader as Settings.max_seconds (read once, at the door).
    with pytest.raises(AudioError, match="limit"):
        load_clip(path, limit_seconds=read_env({"MT3_DEMO_MAX_SECONDS": "1.5"})[0].max_seconds)
    assert load_clip(path, limit_seconds=read_env({"MT3_DEMO_MAX_SECONDS": "10"})[0].max_seconds).duration == \
        pytest.approx(3.0, abs=1e-3)
    assert load_clip(path).duration == pytest.approx(3.0, abs=1e-3)  # no limit given: the default 600 s


def test_silent_audio_warns_but_loads(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000), 16000)
    clip = load_clip(path)
    assert any("silent" in w for w in clip.warnings)


def test_absurd_sample_rate():
    with pytest.raises(AudioError, match="implausible sample rate of 1000 Hz"):
        Clip.from_array(np.zeros(5000, np.float32), sample_rate=1000)


def test_too_many_channels():
    with pytest.raises(AudioError, match="64 channels"):
        Clip.from_array(np.zeros((16000, 64), np.float32))


def test_nan_and_inf(tmp_path):
    x = np.sin(np.linspace(0, 100, 16000)).astype(np.float32)
    x[10] = np.nan
    x[20] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    clip = load_clip(path)
    assert np.isfinite(clip.samples).all()
    assert any("NaN" in w for w in clip.warnings)
    x[:5000] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="invalid samples"):
        load_clip(path)


def test_resample_length_and_identity():
    x = np.random.default_rng(1).standard_normal(44100).astype(np.float32)
    assert len(resample(x, 44100, 16000)) == 16000
    assert resample(x, 16000, 16000) is not None and np.array_equal(resample(x, 16000, 16000), x)


def test_original_mono_at_other_rate(tone_wav):
    clip = load_clip(tone_wav(rate=22050, channels=2))
    y = clip.original_mono(44100)
    assert abs(len(y) - 44100) <= 1


def test_too_long_is_refused_from_the_header_before_decoding(tone_wav, monkeypatch):

    path = tone_wav(seconds=3.0)

    def no_decode(*args, **kwargs):  # pragma: no cover - reaching it is the failure
        raise AssertionError("the whole file was decoded before the length check")

    monkeypatch.setattr(sf, "read", no_decode)  # audio.py imports this same module
    with pytest.raises(AudioError, match="limit is 2.0 s"):
        load_clip(path, limit_seconds=2.0)


def test_opposite_phase_channels_use_one_channel(tmp_path):
    t = np.arange(16000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "phase.wav"
    sf.write(path, np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    clip = load_clip(path)
    assert np.sqrt(np.mean(clip.samples ** 2)) > 0.1  # not the silent mix-down
    assert any("opposite phase" in w for w in clip.warnings)


def test_loading_holds_no_full_size_float64_copy(tmp_path):
    """A long stereo upload is checked (finite, channel balance) in blocks: the loader's peak of
    numpy allocations stays near what it must hold — the decoded frames (1×) and their mono mix
    (0.5×) — where a float64 square of the frames alone would add 2×."""
    import tracemalloc

    rate, seconds = 44100, 60
    t = np.arange(rate * seconds, dtype=np.float32) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "long_stereo.wav"
    sf.write(str(path), np.stack([tone, 0.5 * tone], axis=1), rate, subtype="PCM_16")
    del t, tone
    frames_bytes = rate * seconds * 2 * 4  # the decoded [n, 2] float32 array
    tracemalloc.start()
    try:
        clip = load_clip(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clip.original.shape == (rate * seconds, 2) and not clip.warnings
    assert peak < 1.75 * frames_bytes, peak / frames_bytes
