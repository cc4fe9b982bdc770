"""MR-MT3's three log-mel frontends and its input normalisation (docs/models.md#mr-mt3-frontends).

Every frontend maps the zero-padded sample buffers of the segments to encoder inputs:

    segments [S, 32768] float32 (256 frames of 128 samples, the last one zero-padded)
      -> log-mel [S, T, n_mels]          T = 256, or 257 for ``torchaudio-legacy``
      -> clip to [-12, 5], scale to [0, 1]
      -> rows >= valid frames (and legacy's extra row 256) set to 0

The three frontends:

* ``torchaudio``        upstream HEAD (commit 925fe89, June 2024): magnitude STFT, not centred
                        (``pad_end`` like TF), torchaudio's HTK mel matrix 20-7600 Hz (triangles
                        linear in Hz), ln with values <= 0 floored to 1e-5.
* ``torchaudio-legacy`` the training-era frontend of the from-scratch checkpoints: centred frames
                        with reflect padding (257 rows per segment), mel 20-8000 Hz, ln(x + 1e-6).
* ``tf``                MT3's exact Magenta/TF frontend (``mt3.features.LogMel``), used by the
                        "continual" checkpoints that were fine-tuned from MT3's weights.

The torchaudio frontends are written with ``torch.stft`` and torchaudio's filterbank in the same
operation order as ``torchaudio.transforms.MelSpectrogram``, so they match upstream bit for bit
(tests check this against the set-B fixtures).
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import torch

from ...options import MR_MT3_FRONTENDS as FRONTENDS
from ..mt3.features import HOP, SAMPLE_RATE, SEGMENT_SAMPLES, LogMel, num_segments, valid_frames

N_FFT = 2048

MIN_LOG_MEL = -12.0  # upstream's mel_norm constants
MAX_LOG_MEL = 5.0


@lru_cache(maxsize=8)
def _mel_matrix(n_mels: int, f_max: float, device: str) -> torch.Tensor:
    """torchaudio's HTK mel filterbank, unnormalised: [1025, n_mels] float32."""
    import torchaudio  # only the MR-MT3 frontends need it

    with warnings.catch_warnings():  # 512 bands over 1025 FFT bins leave a few bands empty: expected
        warnings.simplefilter("ignore", UserWarning)
        fb = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 20.0, f_max, n_mels, SAMPLE_RATE,
                                                   norm=None, mel_scale="htk")
    return fb.to(device)


@lru_cache(maxsize=4)
def _hann(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, device=device)


def _mel_magnitude(x: torch.Tensor, n_mels: int, f_max: float, center: bool) -> torch.Tensor:
    """|STFT| @ mel matrix: [S, samples] -> [S, frames, n_mels] (same op order as torchaudio)."""
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window=_hann(str(x.device)),
                      center=center, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True).abs()  # [S, 1025, frames]
    return torch.matmul(spec.transpose(-1, -2), _mel_matrix(n_mels, f_max, str(x.device)))


def logmel_torchaudio(segments: torch.Tensor, n_mels: int = 512) -> torch.Tensor:
    """Upstream HEAD frontend: [S, 32768] -> [S, 256, n_mels] log-mel (not normalised).

    ``pad_end`` as in TF: ceil(32768 / 128) = 256 frames need 2048 + 128·255 samples, so 1920 zeros
    are appended; frame r covers samples 128r … 128r + 2047.
    """
    x = torch.nn.functional.pad(segments, (0, N_FFT - HOP))
    mel = _mel_magnitude(x, n_mels, 7600.0, center=False)
    return torch.log(torch.where(mel <= 0, torch.full_like(mel, 1e-5), mel))


def logmel_torchaudio_legacy(segments: torch.Tensor, n_mels: int = 512) -> torch.Tensor:
    """Training-era frontend: [S, 32768] -> [S, 257, n_mels] log-mel (not normalised).

    Centred frames (reflect padding of the segment's own samples), top edge 8 kHz (torchaudio's
    default), ln(S + 1e-6). Its frame t lines up with HEAD's frame t − 8.
    """
    mel = _mel_magnitude(segments, n_mels, SAMPLE_RATE / 2, center=True)
    return torch.log(mel.clamp_min(0) + 1e-6)


def normalise(logmel: torch.Tensor, valid: list[int] | torch.Tensor) -> torch.Tensor:
    """Clip to [−12, 5], scale to [0, 1], then zero every row >= the segment's valid frame count.

    Zeroing happens after the scaling (0 means "log-mel −12" in normalised units). For the legacy
    frontend row 256 is always >= valid (valid <= 256), so it is zeroed too — as upstream does.
    """
    x = (logmel.clamp(MIN_LOG_MEL, MAX_LOG_MEL) - MIN_LOG_MEL) / (MAX_LOG_MEL - MIN_LOG_MEL)
    valid_t = torch.as_tensor(valid, device=x.device).view(-1, 1)
    rows = torch.arange(x.shape[1], device=x.device).view(1, -1)
    return x * (rows < valid_t).unsqueeze(-1).to(x.dtype)


class Frontend:
    """One frontend, chosen once: ``frontend(x, start, stop)`` -> encoder inputs [S, T, n_mels].

    The transcriber builds it at load time, so the choice is not re-dispatched per chunk and the
    TF frontend's mel matrix and window are built once, not per call.
    """

    def __init__(self, name: str, n_mels: int = 512, device: torch.device | str = "cpu"):
        if name not in FRONTENDS:
            raise ValueError(f"unknown MR-MT3 frontend {name!r}; choose one of {', '.join(FRONTENDS)}")
        self.name, self.n_mels, self.device = name, n_mels, torch.device(device)
        self._tf = LogMel(n_mels, device=self.device) if name == "tf" else None
        self._logmel = logmel_torchaudio if name == "torchaudio" else logmel_torchaudio_legacy

    def __call__(self, samples, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """16 kHz mono signal [n] -> segments ``start`` … ``stop − 1`` (all by default; a range
        bounds memory on long files — every segment's features depend on its own samples only).
        T = 256 rows per segment, 257 for ``torchaudio-legacy``. Segmentation as MT3 (docs/models.md#mt3-frontend)."""
        x = torch.as_tensor(samples, dtype=torch.float32).to(self.device).flatten()
        total = num_segments(x.numel())
        stop = total if stop is None else min(stop, total)
        valid = valid_frames(x.numel())[start:stop]
        if self._tf is not None:
            logmel = self._tf(x, start, stop)
        else:
            logmel = self._logmel(split_segments(x)[start:stop], self.n_mels)
        return normalise(logmel, valid)


def compute_features(samples, frontend: str, n_mels: int = 512, device: torch.device | str = "cpu",
                     start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Encoder inputs for MR-MT3 in one call: ``Frontend(frontend, n_mels, device)(samples, start, stop)``."""
    return Frontend(frontend, n_mels, device)(samples, start, stop)


def split_segments(samples: torch.Tensor) -> torch.Tensor:
    """16 kHz mono signal [n] -> zero-padded segment buffers [S, 32768] (MT3's framing, docs/models.md#mt3-frontend:
    whole 128-sample frames plus at least one padding sample, segments of 256 frames)."""
    x = samples.flatten()
    s = num_segments(x.numel())
    return torch.nn.functional.pad(x, (0, s * SEGMENT_SAMPLES - x.numel())).view(s, SEGMENT_SAMPLES)
