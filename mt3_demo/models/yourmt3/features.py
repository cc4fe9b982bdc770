"""YourMT3+'s frontend (docs/models.md#yourmt3-frontend): segmenting and the log-magnitude spectrogram.

16 kHz mono → non-overlapping segments of 32767 samples (last one zero-padded) → per segment:
|STFT| (periodic Hann 2048, hop 300, centred, reflect padding) → drop the DC bin → ln(x + 1e-5)
→ min-max normalisation over the whole segment → [110 frames, 1024 bins].
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

SAMPLE_RATE = 16000
# Upstream quirk: segments are 32767 samples (2.0479375 s), *not* 32768. Kept, because segment k
# starts at 32767·k/16000 s and the decoded times are offsets from that start.
SEGMENT_SAMPLES = 32767
N_FFT = 2048
HOP = 300
N_FRAMES = 1 + SEGMENT_SAMPLES // HOP  # 110 (centred STFT)
N_BINS = N_FFT // 2  # 1024 after dropping DC
LOG_EPS = 1e-5
MINMAX_EPS = 0.008


def num_segments(n_samples: int) -> int:
    """ceil(N / 32767): an exact multiple gets no extra segment (unlike MT3); at least one."""
    return max(1, -(-n_samples // SEGMENT_SAMPLES))


def segment_start_times(n: int) -> list[float]:
    """Start of segment k in seconds: 32767·k/16000, unrounded (float64, as upstream divides)."""
    return [SEGMENT_SAMPLES * k / SAMPLE_RATE for k in range(n)]


def segment_audio(samples: np.ndarray) -> np.ndarray:
    """[N] float32 mono → [n_segments, 32767] float32, the last segment zero-padded."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n = num_segments(len(x))
    out = np.zeros((n, SEGMENT_SAMPLES), dtype=np.float32)
    out.reshape(-1)[: len(x)] = x
    return out


class LogSpectrogram(nn.Module):
    """Segments [B, 32767] (or [B, 1, 32767]) → normalised log-magnitudes [B, 110, 1024].

    ``window`` is the checkpoint's ``spectrogram.stft.window`` (a periodic Hann window). Computed in
    float32 whatever the model's dtype: the global min-max makes the spectrogram sensitive to
    rounding, and the STFT is a negligible part of the cost.
    """

    def __init__(self):
        super().__init__()
        window = torch.empty(N_FFT)
        if not window.is_meta:  # on the meta device the checkpoint supplies it (and hann_window there imports sympy)
            window = torch.hann_window(N_FFT, periodic=True)
        self.register_buffer("window", window)

    def forward(self, segments: Tensor) -> Tensor:
        x = segments.reshape(segments.shape[0], -1).float()
        spec = torch.stft(x, N_FFT, HOP, window=self.window.float(), center=True, pad_mode="reflect",
                          return_complex=True).abs()  # [B, 1025, 110]
        y = torch.log(spec[:, 1:, :] + LOG_EPS).transpose(1, 2)  # drop DC → [B, 110, 1024]
        # Upstream quirk: min-max over the whole segment (one loud click rescales all of it).
        lo = y.amin(dim=(1, 2), keepdim=True)
        hi = y.amax(dim=(1, 2), keepdim=True)
        y = (y - lo) / (hi - lo + MINMAX_EPS)
        return torch.nan_to_num(y)
