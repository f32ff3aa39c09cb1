"""LUTLayer and the EFD against the element-by-element oracle (tests/oracle.py)."""

import numpy as np
import pytest
import torch

import dwn_train as dwn
from dwn_train.lut import LUTSpec, efd_terms
from dwn_train.torch_lut import derivative_table
import oracle


def _layer_case(n, variant, mapping="random", ste=True, seed=0):
    torch.manual_seed(seed)
    inputs, num, batch = 7, 5, 6
    layer = dwn.LUTLayer(inputs, num, n=n, mapping=mapping, efd=variant, ste=ste)
    # real-valued inputs with zeros (a zero is a 0 bit: the comparison is strict)
    x = torch.randn(batch, inputs)
    x[0, :3] = 0.0
    x.requires_grad_(True)
    grad = torch.randn(batch, num)
    out = layer(x)
    out.backward(grad)
    return layer, x, grad, out


@pytest.mark.parametrize("variant", dwn.EFD_VARIANTS)
@pytest.mark.parametrize("n", range(1, 9))
def test_forward_and_gradients_match_oracle(n, variant):
    layer, x, grad, out = _layer_case(n, variant)
    ref_out, ref_dx, ref_dluts = oracle.lut_layer(
        oracle.as_numpy(x), oracle.as_numpy(layer.luts), layer.mapping.numpy(), grad.numpy(),
        variant, layer.alpha, layer.beta)
    np.testing.assert_array_equal(out.detach().numpy(), ref_out)
    np.testing.assert_allclose(layer.luts.grad.numpy(), ref_dluts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), ref_dx, rtol=1e-4, atol=1e-5)


def test_repeated_inputs_in_one_lut_accumulate():
    # every LUT reads input 2 twice and input 0 once: gradients of repeated wires add up
    torch.manual_seed(3)
    wiring = torch.tensor([[2, 2, 0], [0, 2, 2]])
    layer = dwn.LUTLayer(3, 2, n=3, mapping=wiring, alpha=0.3, beta=0.5)
    x = torch.randn(4, 3, requires_grad=True)
    grad = torch.randn(4, 2)
    layer(x).backward(grad)
    _, ref_dx, ref_dluts = oracle.lut_layer(oracle.as_numpy(x), oracle.as_numpy(layer.luts), wiring.numpy(),
                                             grad.numpy(), "exponential", 0.3, 0.5)
    np.testing.assert_allclose(x.grad.numpy(), ref_dx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.luts.grad.numpy(), ref_dluts, rtol=1e-6)


def test_ste_false_outputs_table_values():
    layer, x, grad, out = _layer_case(4, "exponential", ste=False)
    ref_out, ref_dx, _ = oracle.lut_layer(oracle.as_numpy(x), oracle.as_numpy(layer.luts), layer.mapping.numpy(),
                                          grad.numpy(), "exponential", layer.alpha, layer.beta, ste=False)
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), ref_dx, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", dwn.EFD_VARIANTS)
@pytest.mark.parametrize("n", [9, pytest.param(10, marks=pytest.mark.slow)])
def test_factorised_derivative_table_for_large_n(n, variant):
    # n > 8 takes the factorised path (no cached matrix); compare with the vectorised oracle
    torch.manual_seed(n)
    luts = torch.rand(2, 2**n) * 2 - 1
    alpha, beta = 0.5 * 0.75 ** (n - 1), 1 / 3
    got = derivative_table(luts.double(), efd_terms(variant, n, alpha, beta)).transpose(1, 2).numpy()
    np.testing.assert_allclose(got, oracle.derivative_table(luts.numpy(), variant, alpha, beta), rtol=1e-9, atol=1e-9)


def test_matrix_and_factorised_paths_agree():
    from dwn_train.torch_lut import _factorised_table

    torch.manual_seed(0)
    luts = torch.rand(4, 64) * 2 - 1
    terms = efd_terms("paper", 6, 0.0, 0.0)
    torch.testing.assert_close(derivative_table(luts, terms), _factorised_table(luts, terms), rtol=1e-5, atol=1e-5)


def test_n16_runs_and_n_out_of_range_is_a_clear_error():
    torch.manual_seed(16)
    layer = dwn.LUTLayer(20, 2, n=16)
    x = torch.randn(3, 20, requires_grad=True)
    grad = torch.randn(3, 2)
    out = layer(x)
    out.backward(grad)
    assert x.grad.shape == (3, 20) and x.grad.abs().sum() > 0
    wiring, luts = layer.wiring().tolist(), layer.luts.detach()
    addresses = [[oracle.address(row, wiring[j]) for j in range(2)] for row in x.detach().tolist()]
    assert max(a for row in addresses for a in row) >= 2**15  # the top address bit is exercised
    expected_luts = torch.zeros(2, 65536)
    for i, row in enumerate(addresses):
        for j, a in enumerate(row):
            assert out[i, j].item() == float(luts[j, a] > 0)
            expected_luts[j, a] += grad[i, j]
    torch.testing.assert_close(layer.luts.grad, expected_luts)
    for bad in (0, 17, 2.0):
        with pytest.raises(dwn.DWNError, match="n"):
            dwn.LUTLayer(20, 2, n=bad)


def test_learnable_mapping_layer_matches_oracle():
    torch.manual_seed(1)
    inputs, num, n, batch, tau = 6, 4, 3, 5, 0.5
    layer = dwn.LUTLayer(inputs, num, n=n, mapping="learnable", lm_tau=tau)
    x = torch.randn(batch, inputs, requires_grad=True)
    grad = torch.randn(batch, num)
    out = layer(x)
    out.backward(grad)
    weights = oracle.as_numpy(layer.mapping.weights)
    wiring = weights.argmax(axis=0).reshape(num, n)  # output j*n + l reads input argmax
    ref_out, _, ref_dluts = oracle.lut_layer(oracle.as_numpy(x), oracle.as_numpy(layer.luts), wiring, grad.numpy(),
                                             "exponential", layer.alpha, layer.beta)
    # gradient reaching each wire (the mapped input j*n + l), then through the mapping
    mapped = oracle.as_numpy(x)[:, wiring.reshape(-1)]
    _, wire_grad, _ = oracle.lut_layer(mapped, oracle.as_numpy(layer.luts), np.arange(num * n).reshape(num, n),
                                       grad.numpy(), "exponential", layer.alpha, layer.beta)
    soft = np.exp(weights / tau - (weights / tau).max(axis=0))
    soft /= soft.sum(axis=0)
    np.testing.assert_array_equal(out.detach().numpy(), ref_out)
    np.testing.assert_allclose(layer.luts.grad.numpy(), ref_dluts, rtol=1e-6)
    np.testing.assert_allclose(layer.mapping.weights.grad.numpy(), (2 * oracle.as_numpy(x) - 1).T @ wire_grad,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), wire_grad @ soft.T, rtol=1e-4, atol=1e-5)
    assert torch.equal(layer.wiring(), torch.from_numpy(wiring))


def test_weight_gradient_accumulates_and_is_fresh_each_step():
    torch.manual_seed(2)
    layer = dwn.LUTLayer(10, 4, n=3, mapping="learnable")
    x1, x2 = torch.randn(3, 10), torch.randn(3, 10)

    def grad_of(x):
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()
        return layer.mapping.weights.grad.clone()

    g1, g2 = grad_of(x1), grad_of(x2)
    assert not torch.equal(g1, g2)
    # accumulation without zeroing: the sum of both, not twice the last one
    layer.zero_grad(set_to_none=True)
    layer(x1).sum().backward()
    layer(x2).sum().backward()
    torch.testing.assert_close(layer.mapping.weights.grad, g1 + g2)
    # zero_grad(set_to_none=False) keeps the tensor and zeroes it; the next step is still exact
    layer.zero_grad(set_to_none=False)
    layer(x2).sum().backward()
    torch.testing.assert_close(layer.mapping.weights.grad, g2)


def test_random_mapping_is_balanced():
    torch.manual_seed(0)
    inputs, num, n = 30, 17, 4
    layer = dwn.LUTLayer(inputs, num, n=n)
    counts = torch.bincount(layer.mapping.view(-1), minlength=inputs)
    low, high = (n * num) // inputs, -(-(n * num) // inputs)
    assert counts.min() >= low and counts.max() <= high and counts.sum() == n * num
    assert torch.equal(dwn.LUTLayer(5, 3, n=2, mapping="arange").mapping, torch.tensor([[0, 1], [2, 3], [4, 0]]))


def test_clamp_luts_only_in_training():
    layer = dwn.LUTLayer(4, 2, n=2)
    with torch.no_grad():
        layer.luts.mul_(5)
    layer.eval()
    layer(torch.randn(1, 4))
    assert layer.luts.abs().max() > 1
    layer.train()
    layer(torch.randn(1, 4))
    assert layer.luts.abs().max() <= 1


@pytest.mark.parametrize("mapping", ["random", "learnable"])
def test_state_dict_round_trip(mapping):
    torch.manual_seed(0)
    layer = dwn.LUTLayer(12, 5, n=3, mapping=mapping).eval()
    torch.manual_seed(99)
    fresh = dwn.LUTLayer(12, 5, n=3, mapping=mapping).eval()
    x = torch.randn(8, 12)
    assert not torch.equal(layer(x), fresh(x)) or not torch.equal(layer.luts, fresh.luts)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(layer(x), fresh(x))
    assert torch.equal(layer.wiring(), fresh.wiring())


def test_first_layer_computes_no_input_gradient():
    layer = dwn.LUTLayer(6, 3, n=2)
    x = torch.randn(2, 6)  # no requires_grad: the backward must not need it
    layer(x).sum().backward()
    assert x.grad is None and layer.luts.grad is not None


@pytest.mark.parametrize("kwargs, words", [
    (dict(input_size=0, output_size=2, n=2), "input_size"),
    (dict(input_size=4, output_size=-1, n=2), "output_size"),
    (dict(input_size=4, output_size=2, n=2, mapping="sideways"), "mapping"),
    (dict(input_size=4, output_size=2, n=2, mapping=torch.zeros(3, 2, dtype=torch.long)), "shape"),
    (dict(input_size=4, output_size=2, n=2, mapping=torch.full((2, 2), 4)), "0..3"),
    (dict(input_size=4, output_size=2, n=2, efd="central"), "efd"),
])
def test_bad_arguments_are_clear_errors(kwargs, words):
    with pytest.raises(dwn.DWNError, match=words):
        dwn.LUTLayer(**kwargs)


def test_wrong_input_width_is_a_clear_error():
    with pytest.raises(dwn.DWNError, match=r"\(batch, 4\)"):
        dwn.LUTLayer(4, 2, n=2)(torch.randn(3, 5))


@pytest.mark.parametrize("already", [None, "warn_only"])
def test_deterministic_torch_backend_scatters_under_torchs_deterministic_algorithms(monkeypatch, already):
    """On a GPU torch's index_add_ sums with atomics: with deterministic=True both of the torch
    backend's scatters (table and input gradients) run with torch's deterministic algorithms on,
    the gradients are the same, and the caller's own setting comes back afterwards."""
    from dwn_train import torch_lut
    from dwn_train.lut import LUTSpec, lut_forward
    from lut_cases import lut_case

    if already:
        torch.use_deterministic_algorithms(False, warn_only=True)
    seen = []
    real = torch.Tensor.index_add_

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real(self, *args, **kwargs)

    case = lut_case(5, 40, 30, 64, seed=3)
    grads = {}
    try:
        for deterministic in (False, True):
            x, luts = case["x"].clone().requires_grad_(), case["luts"].clone().requires_grad_()
            monkeypatch.setattr(torch.Tensor, "index_add_", spy)
            lut_forward(x, luts, case["mapping"], LUTSpec(n=5, deterministic=deterministic),
                        backend=torch_lut).backward(case["grad"])
            monkeypatch.setattr(torch.Tensor, "index_add_", real)
            grads[deterministic] = (x.grad, luts.grad)
            assert seen == [deterministic, deterministic], seen  # the table's scatter, then the input's
            assert not torch.are_deterministic_algorithms_enabled()
            assert torch.is_deterministic_algorithms_warn_only_enabled() == bool(already)
            seen.clear()
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a, b) for a, b in zip(grads[False], grads[True]))


def test_the_default_efd_weights_are_written_once():
    """LUTSpec, LUTLayer and the config's null all take lut.default_alpha(n) and lut.DEFAULT_BETA
    (torch-dwn's 0.5 * 0.75**(n-1) and 1/3); a given value wins."""
    from dwn_train.lut import DEFAULT_BETA, default_alpha

    assert DEFAULT_BETA == pytest.approx(1 / 3)
    for n in (1, 3, 6):
        assert default_alpha(n) == pytest.approx(0.5 * 0.75 ** (n - 1))
        spec, layer = LUTSpec(n=n), dwn.LUTLayer(8, 4, n=n)
        assert (spec.alpha, spec.beta) == (layer.alpha, layer.beta) == (default_alpha(n), DEFAULT_BETA)
        assert spec.terms == ((default_alpha(n), DEFAULT_BETA),)
    assert dwn.LUTLayer(8, 4, n=6, alpha=0.2, beta=0.5).spec.terms == ((0.2, 0.5),)
