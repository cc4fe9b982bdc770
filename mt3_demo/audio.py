"""Audio in: decode, validate, mix to mono, resample once to 16 kHz.

One loader for every model: each adapter receives the identical float32 array. Everything a user can
get wrong raises :class:`AudioError` with a message fit to show as it is.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .options import DEFAULT_MAX_SECONDS, MAX_SECONDS_ENV, Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # every model sees the identical 16 kHz mono float32 array
MIN_SECONDS = 0.05  # shorter than one analysis frame of any model is not music
MIN_RATE, MAX_RATE = 4000, 384000
MAX_CHANNELS = 32
SILENCE_PEAK = 1e-4  # -80 dBFS: below this nothing audible is there
# Containers we recognise but libsndfile cannot decode (torchaudio ≥ 2.9 needs torchcodec for them).
UNSUPPORTED_CONTAINERS = {"mp4": "MP4/M4A (AAC) audio", "webm": "WebM/Matroska audio"}


class AudioError(ValueError):
    """Input audio that cannot be transcribed. The message is shown to people verbatim."""


@dataclass
class Clip:
    """A decoded recording.

    samples:   [n] float32 mono at 16 kHz — what every model transcribes.
    original:  [n_orig, channels] float32 at ``original_rate`` — for playback and for models that
               need another rate (they resample from this, not from ``samples``).
    """

    samples: np.ndarray
    original: np.ndarray
    original_rate: int
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @classmethod
    def from_array(cls, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> "Clip":
        """Wrap an in-memory mono or [n, channels] signal at any rate (tests, benchmarks)."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        return _clip_from_frames(x, int(sample_rate), path=None, limit_seconds=float("inf"))

    def original_mono(self, rate: int) -> np.ndarray:
        """The original mixed to mono and resampled to ``rate`` (for models trained at another rate)."""
        return resample(self.original.mean(axis=1), self.original_rate, rate)


def max_seconds(limit_seconds: float | None = None) -> float:
    """The longest accepted recording: ``limit_seconds`` (``Settings.max_seconds``, checked there),
    else the default 600 s. A limit that is not a positive number (NaN included) would switch the
    length check off: it raises :class:`~mt3_demo.options.OptionError`."""
    return DEFAULT_MAX_SECONDS if limit_seconds is None else Settings(max_seconds=limit_seconds).max_seconds


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling (soxr HQ, what current librosa uses). [n] float32 → [m] float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if rate_in == rate_out:
        return x
    import soxr

    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def _fmt_duration(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    return f"{int(m)} min {s:.0f} s" if m else f"{s:.1f} s"


def _decode(path: Path, limit_seconds: float) -> tuple[np.ndarray, int]:
    """Decode any format libsndfile knows (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF) → [n, ch] float32.

    The header is checked first, so an hours-long or 200-channel upload is refused before it is
    decoded into gigabytes of memory.
    """
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        info = None  # not readable by libsndfile: the decode below reports why
    if info is not None and info.frames > 0 and info.samplerate > 0:  # some formats omit the length
        _check_shape(f"'{path.name}'", info.frames, info.channels, info.samplerate, limit_seconds)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data, int(rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as sf_error:
        first_error = sf_error
    # Containers libsndfile does not read (m4a/webm): try torchaudio/ffmpeg if present.
    try:
        import torchaudio

        wav, rate = torchaudio.load(str(path))
        return wav.T.contiguous().numpy().astype(np.float32), int(rate)
    except Exception:
        pass
    container = _container(path)
    if container in UNSUPPORTED_CONTAINERS:
        raise AudioError(f"'{path.name}' is {UNSUPPORTED_CONTAINERS[container]}, a format this server cannot "
                         "decode. Convert it to WAV, FLAC, OGG or MP3 and upload it again.")
    if container is not None:
        # libsndfile's own text names the server-side path: keep it in the log, not in the message.
        log.info("decoding %s failed: %s", path, first_error)
        raise AudioError(f"'{path.name}' looks like {container.upper()} audio but could not be decoded; "
                         "the file may be corrupt or truncated.")
    raise AudioError(f"'{path.name}' is not an audio file we can read (its contents are not WAV, FLAC, "
                     "OGG or MP3 data).")


def _container(path: Path) -> str | None:
    """Which container the file's first bytes announce (whatever its name says), or None."""
    with open(path, "rb") as f:
        head = f.read(12)
    signatures = {b"RIFF": "wav", b"fLaC": "flac", b"OggS": "ogg", b"FORM": "aiff", b"\x1aE\xdf\xa3": "webm"}
    if head[:4] in signatures:
        return signatures[head[:4]]
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0):
        return "mp3"  # an ID3 tag or an MPEG frame sync
    return None


def check_file(path: str | os.PathLike | None, limit_seconds: float | None = None) -> str:
    """The quick check of an upload (before it waits in a queue): raises AudioError as
    :func:`load_clip` would, else returns a one-line description ("20.0 s, 44.1 kHz, stereo").

    Reads the header only when libsndfile knows the format; anything else is decoded in full (a
    file that is not audio fails in milliseconds), so what passes here also loads later.
    """
    import soundfile as sf

    if path is None or str(path).strip() == "":
        raise AudioError("No audio given: upload a recording or pick an example.")
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"'{path.name}' is not a file here (an upload that was refused is deleted at "
                         "once); upload a recording again.")
    if path.stat().st_size == 0:
        raise AudioError(f"'{path.name}' is empty (0 bytes).")
    limit = max_seconds(limit_seconds)
    try:
        info = sf.info(str(path))
        frames, channels, rate = info.frames, info.channels, info.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        frames = 0
    if frames <= 0:  # not readable from the header alone: decode it
        data, rate = _decode(path, limit)
        frames, channels = data.shape
    _check_shape(f"'{path.name}'", frames, channels, rate, limit)
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")
    return f"{frames / rate:.1f} s, {rate / 1000:g} kHz, {layout}"


def load_clip(path: str | os.PathLike | None, limit_seconds: float | None = None) -> Clip:
    """Decode and validate a file; return a :class:`Clip`. Raises AudioError with a human message."""
    if path is None or str(path).strip() == "":
        raise AudioError("No audio given: upload a recording or pick an example.")
    path = Path(path)
    if not path.exists():
        raise AudioError(f"Audio file not found: {path.name or path}")
    if path.is_dir():
        raise AudioError(f"'{path.name or path}' is a folder, not an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"'{path.name}' is empty (0 bytes).")
    # A limit that is not a positive number (NaN included) would switch the length check off.
    limit = max_seconds(limit_seconds)
    frames, rate = _decode(path, limit)
    return _clip_from_frames(frames, rate, path, limit)


def _check_shape(name: str, n_frames: int, channels: int, rate: int, limit: float) -> None:
    """Rate, channel count and length limits, with the message people see."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{name} has an implausible sample rate of {rate} Hz "
                         f"(supported: {MIN_RATE}–{MAX_RATE} Hz).")
    if channels == 0 or n_frames == 0:
        raise AudioError(f"{name} contains no audio samples (zero length).")
    if channels > MAX_CHANNELS:
        raise AudioError(f"{name} has {channels} channels; at most {MAX_CHANNELS} are supported. "
                         "Mix it down to stereo or mono first.")
    seconds = n_frames / rate
    if seconds < MIN_SECONDS:
        raise AudioError(f"{name} is too short ({seconds * 1000:.0f} ms); give at least "
                         f"{MIN_SECONDS * 1000:.0f} ms of audio.")
    if not seconds <= limit:  # (written so that a NaN limit refuses rather than accepts)
        raise AudioError(f"{name} is {_fmt_duration(seconds)} long; the limit is {_fmt_duration(limit)}. "
                         f"Trim it, or raise the limit with {MAX_SECONDS_ENV} / --max-seconds.")


def mean_square(frames: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """[channels]: per-channel mean of squares of [n, channels] samples, summed in float64 block by
    block (a float64 copy of a 10-minute stereo upload would be 400 MB)."""
    total = np.zeros(frames.shape[1])
    for start in range(0, frames.shape[0], block):
        part = frames[start:start + block].astype(np.float64)
        total += np.einsum("ij,ij->j", part, part)
    return total / max(1, frames.shape[0])


def rms(x: np.ndarray) -> float:
    """Root mean square of all samples of ``x`` (0 for none), summed in float64 without a copy."""
    x = np.asarray(x).reshape(-1)
    return float(np.sqrt(mean_square(x[:, None])[0])) if x.size else 0.0


def peak(x: np.ndarray) -> float:
    """Largest |sample| of ``x`` (0 for none), without an |x| copy."""
    return float(max(x.max(), -x.min())) if x.size else 0.0


def _clip_from_frames(frames: np.ndarray, rate: int, path: Path | None,
                      limit_seconds: float | None = None) -> Clip:
    name = f"'{path.name}'" if path is not None else "The audio"
    if frames.ndim != 2:
        raise AudioError(f"{name} contains no audio samples (zero length).")
    limit = max_seconds() if limit_seconds is None else limit_seconds  # inf: from_array's arrays
    _check_shape(name, frames.shape[0], frames.shape[1], rate, limit)
    warnings: list[str] = []
    # A float64 sum of float32 samples cannot overflow, and NaN/inf reach it: a finite total means
    # every sample is finite, checked without a full-size mask (a 10-minute stereo upload: 53 MB).
    if not np.isfinite(np.sum(frames, dtype=np.float64)):
        finite = np.isfinite(frames)
        bad = int((~finite).sum())
        if bad > 0.01 * frames.size:
            raise AudioError(f"{name} contains {bad} invalid samples (NaN or infinity); the file is corrupt.")
        frames = np.where(finite, frames, 0.0).astype(np.float32)
        warnings.append(f"{bad} invalid samples (NaN/inf) were replaced by silence.")
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    if frames.shape[1] > 1:
        # Channels in opposite phase cancel in a plain mix-down; then the loudest channel is the
        # better mono signal (a silent mix would make every model hear nothing).
        channel_rms = np.sqrt(mean_square(frames))
        if channel_rms.max() > SILENCE_PEAK and rms(mono) < 0.1 * channel_rms.mean():
            loudest = int(np.argmax(channel_rms))
            mono = frames[:, loudest]
            warnings.append(f"The channels cancel each other out when mixed (opposite phase); "
                            f"channel {loudest + 1} was used alone.")
    level = peak(mono)
    if level < SILENCE_PEAK:
        warnings.append("The recording is silent (peak below -80 dBFS): expect no notes.")
    elif level > 1.0 + 1e-6:
        warnings.append(f"The recording exceeds full scale (peak {level:.2f}); it was not normalised.")
    samples = resample(mono, rate, SAMPLE_RATE)
    return Clip(samples=samples, original=np.ascontiguousarray(frames, dtype=np.float32),
                original_rate=rate, path=path, warnings=warnings)
