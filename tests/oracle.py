"""Slow, obviously-correct reference implementations, written element by element from the
formulas in the issue and dwn_train/lut.py's docstring. Tests compare the fast code with these."""

from __future__ import annotations

import numpy as np
import torch


def efd_weight(variant: str, hamming: int, alpha: float, beta: float) -> float:
    if variant == "exponential":
        return alpha * beta**hamming
    if variant == "paper":
        return 1.0 / (hamming + 1)
    if variant == "fd":
        return 1.0 if hamming == 0 else 0.0
    raise ValueError(variant)


def address(bits_row, wiring) -> int:
    """Address of one LUT for one sample: bit l = input wiring[l] > 0, LSB first."""
    return sum((1 << l) for l, i in enumerate(wiring) if bits_row[i] > 0)


def derivative(table, a: int, l: int, variant: str, alpha: float, beta: float) -> float:
    """sum_k table[k] * w(popcount((a ^ k) & ~(1 << l))) * (+1 if bit l of k else -1)."""
    total = 0.0
    for k in range(len(table)):
        hamming = bin((a ^ k) & ~(1 << l)).count("1")
        sign = 1.0 if (k >> l) & 1 else -1.0
        total += float(table[k]) * efd_weight(variant, hamming, alpha, beta) * sign
    return total


def lut_layer(x, luts, wiring, grad, variant, alpha, beta, ste=True):
    """Forward output (B, N) and the EFD gradients (dx (B, I), dluts (N, 2^n)), in float64."""
    x, luts, grad = (np.asarray(t, dtype=np.float64) for t in (x, luts, grad))
    wiring = np.asarray(wiring)
    batch, num = x.shape[0], luts.shape[0]
    out = np.zeros((batch, num))
    dx = np.zeros_like(x)
    dluts = np.zeros_like(luts)
    for i in range(batch):
        for j in range(num):
            a = address(x[i], wiring[j])
            value = luts[j, a]
            out[i, j] = float(value > 0) if ste else value
            dluts[j, a] += grad[i, j]
            for l in range(wiring.shape[1]):
                dx[i, wiring[j, l]] += grad[i, j] * derivative(luts[j], a, l, variant, alpha, beta)
    return out, dx, dluts


def derivative_table(luts, variant, alpha, beta):
    """D[j, a, l] for every LUT, address and bit: (N, 2^n, n), float64, vectorised over (a, k)."""
    luts = np.asarray(luts, dtype=np.float64)
    size = luts.shape[1]
    n = size.bit_length() - 1
    a = np.arange(size)[:, None, None]
    k = np.arange(size)[None, :, None]
    l = np.arange(n)[None, None, :]
    diff = (a ^ k) & ~(1 << l)
    hamming = np.zeros_like(diff)
    for m in range(n):
        hamming += (diff >> m) & 1
    weight = np.vectorize(lambda h: efd_weight(variant, int(h), alpha, beta))(hamming)
    sign = np.where((k >> l) & 1, 1.0, -1.0)
    return np.einsum("jk,akl->jal", luts, weight * sign)


def thermometer_thresholds(kind: str, column: np.ndarray, z: int) -> np.ndarray:
    """Thresholds t_1..t_z of one feature from their definitions."""
    from statistics import NormalDist

    values = np.asarray(column, dtype=np.float64)
    if kind == "uniform":
        lo, hi = values.min(), values.max()
        return np.array([lo + i * (hi - lo) / (z + 1) for i in range(1, z + 1)])
    if kind == "gaussian":
        mean, std = values.mean(), values.std(ddof=1)
        return np.array([mean + std * NormalDist().inv_cdf(i / (z + 1)) for i in range(1, z + 1)])
    ordered = sorted(values)
    return np.array([ordered[int(len(ordered) * i / (z + 1))] for i in range(1, z + 1)])


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()
