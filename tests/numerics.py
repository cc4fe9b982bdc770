"""Float32 error bounds behind the numeric parity tests (issue 9).

Every parity test compares our float32 computation with a reference that the upstream code computed
in float32 on another machine. CPU kernels differ per instruction set (ATen's AVX-512/AVX2/default
paths, MKL's FFT and GEMM, oneDNN) and each sums in its own order, so two correct implementations
differ by up to the sum of their rounding errors — never by a machine-specific constant. The
tolerances here are first-order forward-error bounds of the computation being checked, evaluated per
element from float64 oracle magnitudes; nothing is tuned to a difference seen on one machine.

Conventions: ``U`` is float32's unit roundoff 2^-24; "two evaluations" means the bound of one
float32 evaluation is doubled, since ours and upstream's round independently.
"""
from __future__ import annotations

import math

import numpy as np
import torch

U = 2.0 ** -24  # float32 unit roundoff

# A value whose own tolerance exceeds this is in the float32 noise floor and is not compared
# (for a log feature: the signal there is below the rounding error of its frame's FFT).
NOISE_FLOOR = 0.05


def fft_error(n_fft: int) -> float:
    """Bound on ‖FFT computed − exact‖₂ / ‖exact‖₂ for two float32 evaluations, which also bounds
    any one bin's error relative to the frame's spectrum norm.

    Higham, *Accuracy and Stability of Numerical Algorithms* (2002) Thm 24.2: a radix-2 FFT has
    relative error ≤ log2(n)·η/(1 − log2(n)·η), η = μ + γ4(√2 + μ) ≈ 7u for accurate twiddles
    (μ ≈ u); mixed-radix kernels (MKL, pocketfft) obey the same order. This worst case is needed:
    the SSE kernels put up to ≈50·u·‖X‖₂ into single bins, far above a random-walk estimate.
    """
    return 2 * 7 * math.log2(n_fft) * U


def sum_error(n_terms: int) -> float:
    """Relative error of a float32 sum of n non-negative terms, two evaluations: 2·γ_n ≈ 2·n·u
    (worst case, Higham §3.1: any summation order)."""
    return 2 * n_terms * U


def stft_magnitude64(frames: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Oracle |rfft(frame·window)| in float64: [..., n_fft] frames -> [..., n_fft/2+1]."""
    return torch.fft.rfft(frames.double() * window.double(), dim=-1).abs()


def bin_error(mag64: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Per-frame bound on |δ|X_k|| for every bin k: [..., bins] -> [..., 1].

    |δ|X_k|| ≤ |δX_k| ≤ ‖δX‖₂ ≤ fft_error · ‖X‖₂ (plus the window product, u·|X_k|, negligible),
    where ‖X‖₂² over the full two-sided spectrum is at most twice the one-sided sum (Parseval).
    """
    norm = torch.sqrt(2 * (mag64 ** 2).sum(-1, keepdim=True))
    return fft_error(n_fft) * norm


def mel_log_tolerance(mag64: torch.Tensor, mel: torch.Tensor, n_fft: int, offset: float = 0.0,
                      floor: float = 1e-5):
    """Oracle log-mel and the per-element bound on |δ log(mel + offset)| for mel = |X| @ W.

    δmel_j ≤ (Σ_k W_kj)·bin_error + sum_error(K)·mel_j (the matmul's accumulation), and
    δ log(m) = δm / m to first order (the log's own rounding, ~u·|log m|, is added). A band with
    no FFT bin under it (mel exactly 0 everywhere) is set to ln(``floor``) by both sides: only the
    log's rounding remains. Returns (log64 [..., n_mels], tolerance [..., n_mels]).
    """
    w = mel.double()
    m = mag64 @ w
    dm = w.sum(0) * bin_error(mag64, n_fft) + sum_error(w.shape[0]) * m
    value = torch.log(m + offset) if offset else torch.log(torch.where(m > 0, m, torch.full_like(m, floor)))
    tol = torch.where(m > 0, dm / (m + offset), torch.zeros_like(m)) + 4 * U * value.abs()
    return value, tol


def assert_within(got, want, tol, what: str, min_compared: float = 0.5) -> float:
    """|got − want| ≤ tol element by element, skipping the noise floor (tol > NOISE_FLOOR).

    The check keeps its teeth: at least ``min_compared`` of the elements must be above the noise
    floor (a property of the fixture and the bound, the same on every machine), so a test cannot
    pass by comparing nothing. Returns the fraction compared.
    """
    got, want, tol = (np.asarray(t, dtype=np.float64) if not isinstance(t, torch.Tensor)
                      else t.detach().double().numpy() for t in (got, want, tol))
    tol = np.broadcast_to(tol, want.shape)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    compared = tol <= NOISE_FLOOR
    assert compared.mean() >= min_compared, (
        f"{what}: only {100 * compared.mean():.1f}% of elements are above the float32 noise floor")
    excess = np.where(compared, np.abs(got - want) - tol, -np.inf)
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (
        f"{what}: |got − want| = {abs(got[worst] - want[worst]):.3g} at {worst} exceeds its float32 "
        f"bound {tol[worst]:.3g} (got {got[worst]:.6g}, want {want[worst]:.6g})")
    return float(compared.mean())


def network_tolerance(reference, matmuls: int, fan_in: int) -> float:
    """Bound for a float32 network stage, two evaluations, relative to the output's scale.

    Each inner product of length n has relative error ≤ λ·√n·u with high probability (Higham &
    Mary 2019, probabilistic bound; λ = 4), and the errors of the ``matmuls`` products on the
    longest path through the stage add up; residual streams and normalisations keep the scale near
    max|output|. So |δy| ≤ 2 · matmuls · 4√n · u · max|y|.
    """
    scale = float(np.abs(np.asarray(reference)).max())
    return 2 * matmuls * 4 * math.sqrt(fan_in) * U * scale


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """Gap between the largest and second-largest logit at every position: [..., V] -> [...]."""
    top = torch.topk(logits.double(), 2, dim=-1).values
    return top[..., 0] - top[..., 1]


def float64_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``model``: its outputs stand in for the exact values."""
    import copy

    return copy.deepcopy(model).double()


# How far another machine's float32 logits may be from the exact ones, in units of ours: rounding
# bounds depend on shapes and magnitudes, not on summation order, so every kernel's realised error
# is of the same order as ours; 8× leaves room for an unlucky order.
OTHER_MACHINE = 8


def assert_greedy_margins(logits32: torch.Tensor, logits64: torch.Tensor, golden: list[list[int]],
                          what: str) -> None:
    """Teacher-forced logits [rows, L, V] along the golden ids: each golden id is the argmax, and
    its lead over the runner-up exceeds twice the largest float32 logit error another machine could
    make (OTHER_MACHINE × ours, measured against the float64 twin), so no CPU can flip the choice."""
    error = float((logits32.double() - logits64).abs().max())
    margin = top2_margin(logits32)
    for row, ids in enumerate(golden):
        assert logits32[row, :len(ids)].argmax(-1).tolist() == ids, f"{what}: row {row}"
        lead = float(margin[row, :len(ids)].min())
        assert lead > 2 * OTHER_MACHINE * error, (
            f"{what}: row {row} has a near-tie (lead {lead:.3g}, float32 error {error:.3g})")
