"""MT3's log-mel frontend exactly as Magenta computes it (docs/models.md#mt3-frontend), vectorised in PyTorch.

16 kHz mono → whole 128-sample frames (always at least one padding sample) → segments of 256 frames
(2.048 s) → per segment: periodic-Hann STFT 2048/128, not centred, zero-padded at the end of the
*segment* → magnitude → TF's mel matrix (triangles linear in mel, 20–7600 Hz) → natural log with a
floor → [256, n_mels], rows past the segment's valid frames set to 0.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

SAMPLE_RATE = 16000
HOP = 128  # samples per token frame (8 ms)
FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 125
SEGMENT_FRAMES = 256
SEGMENT_SAMPLES = SEGMENT_FRAMES * HOP  # 32768 = 2.048 s
FFT_SIZE = 2048
LO_HZ, HI_HZ = 20.0, 7600.0  # hi: DDSP's default, Magenta does not pass one
LOG_FLOOR = 1e-5
# "zero": ln(x) for x > 0, ln(1e-5) only where x <= 0 (DDSP >= 3.1, kunato, today's Magenta, the fixtures)
# "clamp": ln(max(x, 1e-5)) (DDSP <= 1.9, the releases of the time the official weights were trained)
LOG_FLOORS = ("zero", "clamp")


def frame_count(n_samples: int) -> int:
    """Frames after padding to whole frames; a multiple of 128 still gets one extra zero frame."""
    return n_samples // HOP + 1


def num_segments(n_samples: int) -> int:
    return -(-frame_count(n_samples) // SEGMENT_FRAMES)


def valid_frames(n_samples: int) -> list[int]:
    """Number of real (non-padding) rows in each segment."""
    f = frame_count(n_samples)
    return [min(SEGMENT_FRAMES, f - SEGMENT_FRAMES * k) for k in range(num_segments(n_samples))]


def segment_start_times(n_segments: int) -> list[float]:
    """Decoder start time of each segment: the first frame's time rounded *down* to the 10 ms grid.

    Python float64 arithmetic kept literally (t − t % 0.01), since note decoding compares times strictly.
    """
    out = []
    for k in range(n_segments):
        t = SEGMENT_FRAMES * k / FRAMES_PER_SECOND
        out.append(t - (t % 0.01))
    return out


def _hertz_to_mel(f: Tensor) -> Tensor:
    return 1127.0 * torch.log(1.0 + f / 700.0)


def mel_matrix(n_mels: int = 512, n_fft: int = FFT_SIZE, sample_rate: int = SAMPLE_RATE,
               lo_hz: float = LO_HZ, hi_hz: float = HI_HZ) -> Tensor:
    """[n_fft/2+1, n_mels] float32, the formula of ``tf.signal.linear_to_mel_weight_matrix``.

    HTK mel; triangles linear in *mel* (torchaudio's are linear in Hz, up to 6.7e-4 off); peak 1,
    no area normalisation; the DC bin's row is zero. Float32 arithmetic like TF.
    """
    n_bins = n_fft // 2 + 1
    f32 = torch.float32
    nyquist = torch.tensor(sample_rate / 2.0, dtype=f32)
    # tf.linspace: start + i * (stop - start) / (num - 1), in float32
    freqs = torch.arange(n_bins, dtype=f32) * (nyquist / (n_bins - 1))
    bins_mel = _hertz_to_mel(freqs[1:])[:, None]  # DC excluded
    lo, hi = _hertz_to_mel(torch.tensor(lo_hz, dtype=f32)), _hertz_to_mel(torch.tensor(hi_hz, dtype=f32))
    edges = lo + torch.arange(n_mels + 2, dtype=f32) * ((hi - lo) / (n_mels + 1))
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    up = (bins_mel - lower) / (center - lower)
    down = (upper - bins_mel) / (upper - center)
    w = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([torch.zeros(1, n_mels, dtype=f32), w], dim=0)


class LogMel:
    """The frontend for one mel width, with its window and mel matrix on ``device``."""

    def __init__(self, n_mels: int = 512, log_floor: str = "zero", device: torch.device | str = "cpu"):
        if log_floor not in LOG_FLOORS:
            raise ValueError(f"log_floor must be one of {LOG_FLOORS}, not {log_floor!r}")
        self.n_mels, self.log_floor, self.device = n_mels, log_floor, torch.device(device)
        # periodic Hann: 0.5 − 0.5 cos(2πn/N), denominator N (not N−1)
        self.window = torch.hann_window(FFT_SIZE, periodic=True, dtype=torch.float32, device=self.device)
        self.mel = mel_matrix(n_mels).to(self.device)

    def __call__(self, samples: Tensor | np.ndarray, start: int = 0, stop: int | None = None) -> Tensor:
        """Log-mel of segments ``start .. stop−1`` of a whole signal → [stop−start, 256, n_mels] float32.

        ``samples`` [N] is the whole 16 kHz signal (pass it already on ``device`` to avoid copies);
        computing a range of segments lets callers bound memory on long files.
        """
        x = torch.as_tensor(samples, dtype=torch.float32).to(self.device).reshape(-1)
        n = x.shape[0]
        total = num_segments(n)
        stop = total if stop is None else min(stop, total)
        count = stop - start
        if count <= 0:
            return torch.zeros(0, SEGMENT_FRAMES, self.n_mels, device=self.device)
        # The segments' samples; past the end of the signal everything is zero (whole-frame padding).
        seg = x[start * SEGMENT_SAMPLES: stop * SEGMENT_SAMPLES]
        seg = torch.nn.functional.pad(seg, (0, count * SEGMENT_SAMPLES - seg.shape[0])).view(count, SEGMENT_SAMPLES)
        # Each segment is its own signal: its STFT sees zeros after its end, not the next segment.
        seg = torch.nn.functional.pad(seg, (0, FFT_SIZE - HOP))
        frames = seg.unfold(-1, FFT_SIZE, HOP)  # [count, 256, 2048], a view
        spec = torch.fft.rfft(frames * self.window, dim=-1).abs()  # magnitude, [count, 256, 1025]
        mel = spec @ self.mel
        if self.log_floor == "clamp":
            out = torch.log(torch.clamp(mel, min=LOG_FLOOR))
        else:
            out = torch.where(mel > 0, torch.log(torch.where(mel > 0, mel, 1.0)), math.log(LOG_FLOOR))
        # Padding rows of the last segment are zeros (the T5 feature converter pads features with 0).
        valid = valid_frames(n)[start:stop]
        if valid[-1] < SEGMENT_FRAMES:
            out[-1, valid[-1]:] = 0.0
        return out
