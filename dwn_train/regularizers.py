"""Spectral regularisation of LUT tables (Bacellar et al. 2024, section 3.4).

For a table f = luts[j] over n-bit addresses, the Fourier (Walsh) coefficients are
f^(S) = 2^-n sum_a f(a) (-1)^popcount(a & S).

`spectral_printed`: the paper's formula as printed, ||L C|| (Frobenius) with
C[i, j] = 2^-n prod_{a: i_a = 1} (2 j_a - 1). C is a column-permuted Walsh-Hadamard matrix scaled
by 2^-n, so by Parseval ||L C|| = 2^(-n/2) ||L||: a scaled L2 norm of the table entries, which
does not prefer smooth tables over rough ones.

`spectral`: the form that matches the paper's stated intent (neighbouring addresses should agree):
the degree-weighted spectrum sum_S |S| f^(S)^2, which equals the total influence
sum_l mean_a ((f(a with bit l = 1) - f(a with bit l = 0)) / 2)^2, i.e. it penalises differences
between Hamming-1 neighbours. Computed by the influence form: O(n 2^n) per table.

Both are summed over the LUTs of every LUTLayer of a model.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from .errors import DWNError
from .layers import LUTLayer


@lru_cache(maxsize=16)
def printed_matrix(n: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    """C (2^n, 2^n): C[i, j] = 2^-n prod over the set bits a of i of (2 j_a - 1)."""
    i = torch.arange(2**n).unsqueeze(1)
    j = torch.arange(2**n).unsqueeze(0)
    negatives = torch.zeros(2**n, 2**n, dtype=torch.int64)
    for a in range(n):
        negatives += ((i >> a) & 1) * (1 - ((j >> a) & 1))  # bit a set in i, clear in j: factor -1
    return ((1 - 2 * (negatives % 2)).to(torch.float64) / 2**n).to(dtype=dtype, device=device)


def spectral_printed(luts: torch.Tensor) -> torch.Tensor:
    """||L C|| for a layer's tables L (N, 2^n), as printed in the paper."""
    n = luts.shape[1].bit_length() - 1
    return torch.linalg.matrix_norm(luts @ printed_matrix(n, luts.dtype, str(luts.device)))


def spectral(luts: torch.Tensor) -> torch.Tensor:
    """sum_j sum_S |S| f_j^(S)^2 via the total influence, for tables L (N, 2^n)."""
    num, size = luts.shape
    n = size.bit_length() - 1
    cube = luts.reshape(num, *(2,) * n)
    total = luts.new_zeros(())
    for l in range(n):
        axis = 1 + (n - 1 - l)  # the last axis is bit 0
        diff = (cube.select(axis, 1) - cube.select(axis, 0)) / 2
        total = total + diff.reshape(num, -1).pow(2).mean(dim=1).sum()
    return total


PENALTIES = {"spectral": spectral, "spectral_printed": spectral_printed}
KINDS = ("none", *PENALTIES)


def regularization(model: nn.Module, kind: str) -> torch.Tensor | None:
    """The `kind` penalty summed over every LUTLayer in `model` (None for 'none')."""
    if kind not in KINDS:
        raise DWNError(f"model.regularizer.kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    if kind == "none":
        return None
    return sum(PENALTIES[kind](m.luts) for m in model.modules() if isinstance(m, LUTLayer))


def penalty(model: nn.Module, kind: str, weight: float):
    """weight x the `kind` penalty of `model` as a function of no arguments, chosen once (the
    training step calls it), or None when there is nothing to add."""
    if kind == "none" or not weight:
        return None
    function, layers = PENALTIES[kind], [m for m in model.modules() if isinstance(m, LUTLayer)]
    return lambda: weight * sum(function(m.luts) for m in layers)
