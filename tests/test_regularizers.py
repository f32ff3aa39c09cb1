"""Spectral regularisers: the identities they rest on, and that gradients reach the tables."""

import itertools

import pytest
import torch

import dwn_train as dwn
from dwn_train.regularizers import printed_matrix


def fourier(table: torch.Tensor) -> dict:
    """f^(S) = 2^-n sum_a f(a) (-1)^popcount(a & S), from the definition."""
    size = len(table)
    return {s: sum(float(table[a]) * (-1) ** bin(a & s).count("1") for a in range(size)) / size
            for s in range(size)}


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_printed_form_is_a_scaled_l2_norm_by_parseval(n):
    torch.manual_seed(n)
    luts = torch.rand(5, 2**n, dtype=torch.float64) * 2 - 1
    # C as printed, entry by entry
    for i, j in itertools.product(range(2**n), repeat=2):
        product = 1.0
        for a in range(n):
            if (i >> a) & 1:
                product *= 2 * ((j >> a) & 1) - 1
        assert printed_matrix(n, torch.float64)[i, j] == product / 2**n
    torch.testing.assert_close(dwn.spectral_printed(luts), 2 ** (-n / 2) * torch.linalg.matrix_norm(luts))


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_spectral_equals_degree_weighted_spectrum(n):
    torch.manual_seed(n)
    luts = torch.rand(3, 2**n, dtype=torch.float64) * 2 - 1
    expected = sum(bin(s).count("1") * c ** 2 for table in luts for s, c in fourier(table).items())
    assert dwn.spectral(luts).item() == pytest.approx(expected, rel=1e-12)


def test_spectral_prefers_smooth_tables():
    n = 4
    smooth = torch.ones(1, 2**n)
    parity = torch.tensor([[(-1.0) ** bin(a).count("1") for a in range(2**n)]])
    assert dwn.spectral(smooth).item() == 0.0
    assert dwn.spectral(parity).item() == pytest.approx(n)  # every bit flips the value
    # the printed form cannot tell them apart
    assert dwn.spectral_printed(smooth).item() == pytest.approx(dwn.spectral_printed(parity).item())


@pytest.mark.parametrize("kind", ["spectral", "spectral_printed"])
def test_gradients_reach_every_lut_layer(kind):
    model = torch.nn.Sequential(dwn.LUTLayer(8, 6, n=3), dwn.LUTLayer(6, 4, n=2), dwn.GroupSum(2))
    dwn.regularization(model, kind).backward()
    assert all(layer.luts.grad.abs().sum() > 0 for layer in model[:2])
    with pytest.raises(dwn.DWNError, match="regularizer"):
        dwn.regularization(model, "l1")
