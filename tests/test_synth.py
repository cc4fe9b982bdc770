"""Synthesis: the labelled fallback, FluidSynth when present, level matching and mixing."""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from mt3_demo import synth
from mt3_demo.audio import resample
from mt3_demo.notes import Note

SR = 16000  # small rate keeps the tests fast

PIANO = [Note(0.1, 0.6, 60), Note(0.6, 1.1, 64), Note(1.1, 1.8, 67, program=40)]
DRUMS = [Note(t, t + 0.01, p, is_drum=True) for t, p in ((0.2, 36), (0.7, 38), (1.2, 42), (1.6, 49))]


def window_rms(x, sr, start, length=0.05):
    a = int(start * sr)
    return synth.rms(x[a:a + int(length * sr)])


def test_fallback_when_fluidsynth_cannot_be_imported(monkeypatch):
    # A None entry in sys.modules makes `import fluidsynth` raise ImportError, as on a machine
    # without pyfluidsynth; the real detection code path runs.
    monkeypatch.setitem(sys.modules, "fluidsynth", None)
    usable, reason = synth.fluidsynth_status()
    assert not usable and "FluidSynth" in reason
    audio, sr, method = synth.render_audio(PIANO + DRUMS, sample_rate=SR, end_time=2.0)
    assert method == "fallback (FluidSynth not installed)"
    assert sr == SR and audio.dtype == np.float32 and audio.shape == (2 * SR,)
    assert synth.rms(audio) > 0.01
    with pytest.raises(RuntimeError):
        synth.render_audio(PIANO, sample_rate=SR, backend="fluidsynth")


def test_forced_fallback_renders_drums_audibly():
    audio, sr, method = synth.render_audio(DRUMS, sample_rate=SR, end_time=2.0, backend="fallback")
    assert method.startswith("fallback")
    assert audio.shape == (2 * SR,)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    silence = window_rms(audio, sr, 0.0, 0.15)
    assert silence == 0.0  # nothing before the first hit
    for n in DRUMS:
        assert window_rms(audio, sr, n.onset) > 0.02, f"drum {n.pitch} at {n.onset}s is not audible"


def test_fallback_pitched_notes_and_length():
    audio, sr, _ = synth.render_audio(PIANO, sample_rate=SR, backend="fallback")
    # Without end_time: last offset + tail.
    assert len(audio) == int(round((1.8 + synth.TAIL_SECONDS) * SR))
    assert np.abs(audio).max() == pytest.approx(synth.PEAK, rel=1e-3)
    assert window_rms(audio, sr, 0.3) > 0.05
    # The spectrum of the first note peaks at middle C (261.6 Hz).
    seg = audio[int(0.15 * sr):int(0.55 * sr)]
    freqs = np.fft.rfftfreq(len(seg), 1 / sr)
    assert abs(freqs[np.argmax(np.abs(np.fft.rfft(seg)))] - 261.6) < 5
    # end_time truncates notes that run past it.
    short, _, _ = synth.render_audio(PIANO, sample_rate=SR, end_time=0.5, backend="fallback")
    assert len(short) == SR // 2


def test_empty_notes_give_silence_of_the_clip_length():
    for backend in ("fallback", "auto"):
        audio, sr, _ = synth.render_audio([], sample_rate=SR, end_time=1.5, backend=backend)
        assert audio.shape == (int(1.5 * SR),) and not audio.any()


def test_unknown_backend():
    with pytest.raises(ValueError):
        synth.render_audio(PIANO, backend="sine")


needs_fluidsynth = pytest.mark.skipif(
    not synth.fluidsynth_available(), reason=f"{synth.fluidsynth_status()[1]} (apt-get install libfluidsynth3)")


@needs_fluidsynth
def test_fluidsynth_renders_pitched_and_drums():
    audio, sr, method = synth.render_audio(PIANO + DRUMS, sample_rate=SR, end_time=2.5)
    assert method.startswith("fluidsynth") and "TimGM6mb" in method
    assert audio.shape == (int(2.5 * SR),) and audio.dtype == np.float32
    assert np.abs(audio).max() == pytest.approx(synth.PEAK, rel=1e-3)
    drums, _, _ = synth.render_audio(DRUMS, sample_rate=SR, end_time=2.0, backend="fluidsynth")
    assert synth.rms(drums) > 0.01  # the GM drum kit is heard (pretty_midi's sine synth is silent)
    assert window_rms(drums, SR, 0.2, 0.1) > 10 * window_rms(drums, SR, 0.0, 0.15) + 1e-6


@needs_fluidsynth
def test_fluidsynth_concurrent_calls():
    results, errors = {}, []

    def work(k):
        try:
            results[k] = synth.render_audio(PIANO + DRUMS, sample_rate=SR, end_time=2.0)[0]
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert all(synth.rms(a) > 0.01 for a in results.values())


@needs_fluidsynth
def test_soundfont_env_override(monkeypatch, tmp_path):
    assert synth.soundfont_path(tmp_path / "missing.sf2") == synth.bundled_soundfont()  # a missing file is ignored
    assert synth.soundfont_path(synth.bundled_soundfont()) == synth.bundled_soundfont()
    assert synth.soundfont_path(None) == synth.bundled_soundfont()


def test_match_level():
    t = np.arange(SR) / SR
    reference = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    quiet = (0.01 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    matched = synth.match_level(quiet, reference)
    assert matched.dtype == np.float32
    assert synth.rms(matched) == pytest.approx(synth.rms(reference), rel=1e-3)
    # Never louder than full scale, even when the RMS would ask for it.
    spiky = np.zeros(SR, dtype=np.float32)
    spiky[::1000] = 0.5
    assert np.abs(synth.match_level(spiky, reference)).max() <= 0.99 + 1e-6
    # Silence stays silence; a silent reference changes nothing.
    assert not synth.match_level(np.zeros(10), reference).any()
    np.testing.assert_array_equal(synth.match_level(quiet, np.zeros(10)), quiet)


def test_mix_modes():
    original = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)
    transcription = (0.05 * np.sin(2 * np.pi * 440 * np.arange(SR // 2) / SR)).astype(np.float32)
    stereo = synth.mix(original, transcription, mode="stereo")
    assert stereo.shape == (SR, 2)
    np.testing.assert_array_equal(stereo[:, 0], original)
    # Right channel: the transcription at the original's loudness, padded with silence.
    assert synth.rms(stereo[: SR // 2, 1]) == pytest.approx(synth.rms(original), rel=1e-2)
    assert not stereo[SR // 2:, 1].any()
    blend = synth.mix(original, transcription, mode="blend")
    assert blend.shape == (SR,) and np.abs(blend).max() <= 0.99 + 1e-6
    np.testing.assert_allclose(blend[SR // 2:], 0.5 * original[SR // 2:], atol=1e-6)
    with pytest.raises(ValueError):
        synth.mix(original, transcription, mode="surround")


def test_resample_and_write_wav(tmp_path):
    x = np.sin(2 * np.pi * 220 * np.arange(22050) / 22050).astype(np.float32)
    y = resample(x, 22050, 16000)
    assert abs(len(y) - 16000) <= 1
    path = synth.write_wav(tmp_path / "out" / "a.wav", 1.5 * y, 16000)  # clipped, not wrapped
    data, sr = sf.read(str(path))
    assert sr == 16000 and len(data) == len(y) and np.abs(data).max() <= 1.0
    stereo = synth.write_wav(tmp_path / "s.wav", np.stack([y, y], axis=1), 16000)
    assert sf.info(str(stereo)).channels == 2


@needs_fluidsynth
def test_fluidsynth_render_holds_one_instrument_at_a_time():
    """Twelve instruments over a minute: the render sums them into one buffer as it goes, so its
    numpy peak is the float64 buffer (1×), one instrument's waveform with its pieces (≤ 2×) and the
    float32 result (0.5×) — not all twelve full-length waveforms at once (pretty_midi's way: 12×)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    notes = []
    for program in range(0, 96, 8):
        for _ in range(20):
            onset = float(rng.uniform(0, 55))
            notes.append(Note(pitch=int(rng.integers(40, 80)), onset=onset, offset=onset + 1.0, velocity=90,
                              program=program, is_drum=False))
    notes.sort(key=lambda n: n.onset)
    tracemalloc.start()
    try:
        audio, rate, method = synth.render_audio(notes, end_time=60.0, backend="fluidsynth")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert method.startswith("fluidsynth") and len(audio) == 60 * rate and synth.rms(audio) > 0.01
    assert peak < 3.5 * len(audio) * 8, peak / (len(audio) * 8)
