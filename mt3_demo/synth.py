"""Turn notes back into sound, so a person can hear what a model transcribed.

The preferred path is FluidSynth with a General MIDI soundfont (pretty_midi ships a small one,
``TimGM6mb.sf2``; ``$MT3_DEMO_SOUNDFONT`` may point to a better one): real instrument timbres and,
above all, drums. FluidSynth needs the system library (Debian: ``libfluidsynth3``; Spaces:
``packages.txt``) and the ``pyfluidsynth`` wheel. Without them we fall back to a small synthesizer
of our own — harmonic tones for pitched notes and noise bursts for drums — rather than pretty_midi's
``synthesize()``, which renders drums as silence. The returned ``method`` string says which one was
used, so the UI can label the audio honestly.

Everything here is re-entrant: each call creates (and deletes) its own FluidSynth instance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .audio import peak, rms
from .instruments import drum_kind
from .notes import Note, to_midi

DEFAULT_SAMPLE_RATE = 22050  # plenty for a preview, half the size of 44.1 kHz files
TAIL_SECONDS = 0.5  # room for the last notes' release when no clip length is given
PEAK = 0.9  # output peak level; headroom for mixing

FLUIDSYNTH_METHOD = "fluidsynth"
FALLBACK_METHOD = "fallback (FluidSynth not installed)"
FORCED_FALLBACK_METHOD = "fallback (simple synth)"


# ------------------------------------------------------------------------------------------------
# FluidSynth


def bundled_soundfont() -> Path:
    """pretty_midi's General MIDI soundfont (TimGM6mb.sf2, ~6 MB)."""
    import pretty_midi

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def soundfont_path(configured: Path | str | None = None) -> Path:
    """``configured`` (``Settings.soundfont``: ``$MT3_DEMO_SOUNDFONT``) when it names an existing
    file, else pretty_midi's bundled one."""
    if configured and Path(configured).is_file():
        return Path(configured)
    return bundled_soundfont()


def fluidsynth_status(soundfont: Path | str | None = None) -> tuple[bool, str]:
    """(usable, reason). Cheap after the first call: Python caches the import."""
    try:
        import fluidsynth  # noqa: F401  (pyfluidsynth; loads libfluidsynth via ctypes)
        from pretty_midi import fluidsynth as pm_fluidsynth
    except (ImportError, OSError) as exc:
        return False, f"FluidSynth unavailable: {exc}"
    # pretty_midi decides once, at its own import, whether pyfluidsynth works.
    if not getattr(pm_fluidsynth, "_HAS_FLUIDSYNTH", True):
        return False, "FluidSynth unavailable: pretty_midi could not import pyfluidsynth"
    if not soundfont_path(soundfont).is_file():
        return False, f"no soundfont found at {soundfont_path(soundfont)}"
    return True, f"FluidSynth with {soundfont_path(soundfont).name}"


def fluidsynth_available(soundfont: Path | str | None = None) -> bool:
    return fluidsynth_status(soundfont)[0]


def _render_fluidsynth(notes: list[Note], sample_rate: int, end_time: float, n_samples: int,
                       soundfont: Path | str | None = None) -> np.ndarray:
    """[n_samples] float64: every instrument rendered by one private FluidSynth and summed, in
    pretty_midi's order and scale (its ``PrettyMIDI.fluidsynth(normalize=False)``).

    Instrument by instrument into one buffer: pretty_midi's whole-file render keeps every
    instrument's full-length float64 waveform until it sums them (~100 MB per instrument for ten
    minutes at 22.05 kHz, so a dozen instruments would take over a gigabyte).
    """
    import fluidsynth

    midi = to_midi(notes, end_time=end_time)
    synthesizer = fluidsynth.Synth(samplerate=float(sample_rate))
    try:
        sfid = synthesizer.sfload(str(soundfont_path(soundfont)))
        out = np.zeros(n_samples)
        for instrument in midi.instruments:
            wave = instrument.fluidsynth(fs=sample_rate, synthesizer=synthesizer, sfid=sfid)
            m = min(n_samples, wave.shape[0])
            out[:m] += wave[:m]
            del wave
    finally:
        synthesizer.delete()
    out /= max(1, len(midi.instruments)) * 2 ** 15  # pretty_midi's scale for normalize=False
    return out


def _midi_to_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12.0)


def _pitched_tone(pitch: int, duration: float, velocity: int, sr: int) -> np.ndarray:
    """A plucked/organ-like tone: a few harmonics, quick attack, gentle decay, short release."""
    release = 0.08
    n = max(1, int(round((duration + release) * sr)))
    t = np.arange(n) / sr
    f0 = _midi_to_hz(pitch)
    wave = np.zeros(n)
    for k, amp in enumerate((1.0, 0.5, 0.25, 0.12), start=1):
        if k * f0 < sr / 2:  # skip harmonics above Nyquist (they would alias)
            wave += amp * np.sin(2 * np.pi * k * f0 * t)
    env = np.minimum(1.0, t / 0.005) * (0.35 + 0.65 * np.exp(-t / 0.6))
    after = t > duration
    env[after] *= np.exp(-(t[after] - duration) / (release / 4))
    return wave * env * (velocity / 127.0)


def _drum_hit(pitch: int, velocity: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Noise bursts (plus a pitch sweep for the kick) shaped roughly like the GM drum kinds."""
    kind = drum_kind(pitch)
    length = {"Kick": 0.25, "Snare": 0.18, "Hi-hat": 0.06, "Toms": 0.25, "Cymbals": 0.6}.get(kind, 0.12)
    n = int(length * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    if kind == "Kick":
        freq = 50 + 90 * np.exp(-t / 0.03)  # falling pitch: the "thump"
        wave = np.sin(2 * np.pi * np.cumsum(freq) / sr) * np.exp(-t / 0.08) + 0.1 * noise * np.exp(-t / 0.01)
    elif kind == "Snare":
        wave = 0.6 * noise * np.exp(-t / 0.05) + 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.04)
    elif kind == "Toms":
        f = 80 + 4 * (pitch - 41)
        wave = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.1) + 0.15 * noise * np.exp(-t / 0.02)
    else:
        # Hi-hats, cymbals, other percussion: bright noise (first difference ≈ high-pass).
        bright = np.diff(noise, prepend=0.0)
        wave = 0.5 * bright * np.exp(-t / (length / 4))
    return wave * (velocity / 127.0)


def _render_fallback(notes: list[Note], sample_rate: int, n_samples: int) -> np.ndarray:
    out = np.zeros(n_samples + int(sample_rate))  # slack for tails, trimmed by the caller
    rng = np.random.default_rng(0)  # fixed seed: the same notes always sound the same
    for n in notes:
        start = int(round(max(0.0, n.onset) * sample_rate))
        if start >= n_samples:
            continue
        if n.is_drum:
            sound = _drum_hit(n.pitch, n.velocity, sample_rate, rng)
        else:
            # Long notes are capped: a held note beyond 10 s adds nothing to a preview.
            duration = min(max(n.offset - n.onset, 0.02), 10.0)
            sound = 0.5 * _pitched_tone(n.pitch, duration, n.velocity, sample_rate)
        stop = min(len(out), start + len(sound))
        out[start:stop] += sound[: stop - start]
    return out


# ------------------------------------------------------------------------------------------------
# Public API


def render_audio(
    notes: Iterable[Note],
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    end_time: float | None = None,
    backend: str = "auto",
    soundfont: Path | str | None = None,
) -> tuple[np.ndarray, int, str]:
    """Synthesize notes to mono float32 audio peaking at ``PEAK`` (silence stays silence).

    The result is exactly ``end_time`` seconds long when given (the clip length, so it lines up with
    the original), else it runs to the last offset plus ``TAIL_SECONDS``. ``backend`` is "auto"
    (FluidSynth when usable, else the fallback), "fluidsynth" (raise if unusable) or "fallback".
    Returns ``(audio, sample_rate, method)``; ``method`` starts with "fluidsynth" or "fallback".
    ``soundfont``: ``Settings.soundfont`` (None or a missing file: the bundled one).
    """
    if backend not in ("auto", "fluidsynth", "fallback"):
        raise ValueError(f"unknown synth backend {backend!r}")
    notes = list(notes)
    sample_rate = int(sample_rate)
    if end_time is None or end_time <= 0:
        end_time = max((n.offset for n in notes), default=0.0) + TAIL_SECONDS
    n_samples = int(round(end_time * sample_rate))

    audio = None
    method = FORCED_FALLBACK_METHOD if backend == "fallback" else FALLBACK_METHOD
    if backend != "fallback":
        usable, reason = fluidsynth_status(soundfont)
        if usable:
            try:
                audio = _render_fluidsynth(notes, sample_rate, end_time, n_samples, soundfont) if notes \
                    else np.zeros(0)
                method = f"{FLUIDSYNTH_METHOD} ({soundfont_path(soundfont).name})"
            except (ImportError, OSError) as exc:
                if backend == "fluidsynth":
                    raise
                method = f"fallback (FluidSynth failed: {exc})"
        elif backend == "fluidsynth":
            raise RuntimeError(reason)
    if audio is None:
        audio = _render_fallback(notes, sample_rate, n_samples)

    if len(audio) == n_samples and audio.dtype == np.float64:
        fitted = audio  # already the clip's length: scaled in place, no second full-length copy
    else:
        fitted = np.zeros(n_samples, dtype=np.float64)
        m = min(n_samples, len(audio))
        fitted[:m] = audio[:m]
    level = peak(fitted)
    if level > 0:
        fitted *= PEAK / level
    return fitted.astype(np.float32), sample_rate, method


def match_level(x: np.ndarray, reference: np.ndarray, max_peak: float = 0.99) -> np.ndarray:
    """Scale ``x`` to the RMS loudness of ``reference`` so the two can be compared by ear.

    The gain is limited so that ``x`` never clips (peak <= ``max_peak``); a silent ``x`` or
    reference leaves ``x`` unchanged.
    """
    x = np.asarray(x, dtype=np.float32)
    level_x, level_ref = rms(x), rms(reference)
    if level_x == 0 or level_ref == 0:
        return x.copy()
    gain = level_ref / level_x
    gain = min(gain, max_peak / peak(x))
    return (x * gain).astype(np.float32)


def mix(original: np.ndarray, synth: np.ndarray, mode: str = "stereo") -> np.ndarray:
    """Original and transcription together (same sample rate), so missed notes stand out.

    The synthesized part is first level-matched to the original. ``mode="stereo"`` puts the
    original on the left and the transcription on the right (shape ``(n, 2)``);
    ``mode="blend"`` sums them into mono at equal loudness (shape ``(n,)``), scaled down only if it
    would clip. The shorter signal is padded with silence.
    """
    original = np.asarray(original, dtype=np.float32).reshape(-1)
    synth = match_level(np.asarray(synth, dtype=np.float32).reshape(-1), original)
    n = max(len(original), len(synth))
    a = np.zeros(n, dtype=np.float32)
    b = np.zeros(n, dtype=np.float32)
    a[: len(original)] = original
    b[: len(synth)] = synth
    if mode == "stereo":
        return np.stack([a, b], axis=1)
    if mode == "blend":
        out = 0.5 * (a + b)
        level = peak(out)
        if level > 0.99:
            out *= 0.99 / level
        return out.astype(np.float32)
    raise ValueError(f"unknown mix mode {mode!r} (use 'stereo' or 'blend')")


def write_wav(path: str | Path, x: np.ndarray, sr: int) -> Path:
    """16-bit PCM WAV (mono ``(n,)`` or stereo ``(n, 2)``); values are clipped to [-1, 1]."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), int(sr), subtype="PCM_16")
    return path
