"""GroupSum and the stand-alone LearnableMapping."""

import numpy as np
import pytest
import torch

import dwn_train as dwn


def test_group_sum_divisible():
    x = torch.arange(12, dtype=torch.float32).view(2, 6)
    out = dwn.GroupSum(3, tau=2)(x)
    expect = torch.tensor([[0 + 1, 2 + 3, 4 + 5], [6 + 7, 8 + 9, 10 + 11]], dtype=torch.float32) / 2
    assert torch.equal(out, expect)


def test_group_sum_pads_with_zeros_and_takes_k_positionally():
    x = torch.ones(1, 7)
    # group size ceil(7 / 3) = 3, padded to 9: groups of 3, 3 and 1 real entries
    assert dwn.GroupSum(3)(x).tolist() == [[3.0, 3.0, 1.0]]
    with pytest.raises(dwn.DWNError, match="k"):
        dwn.GroupSum(0)


def test_learnable_mapping_forward_and_gradients():
    torch.manual_seed(0)
    lm = dwn.LearnableMapping(5, 8, tau=0.3)
    x = torch.randn(4, 5, requires_grad=True)
    grad = torch.randn(4, 8)
    out = lm(x)
    out.backward(grad)
    w = lm.weights.detach().double().numpy()
    xn = x.detach().double().numpy()
    np.testing.assert_array_equal(out.detach().numpy(), x.detach().numpy()[:, w.argmax(axis=0)])
    np.testing.assert_allclose(lm.weights.grad.numpy(), (2 * xn - 1).T @ grad.double().numpy(), rtol=1e-5, atol=1e-6)
    soft = np.exp(w / 0.3) / np.exp(w / 0.3).sum(axis=0)
    np.testing.assert_allclose(x.grad.numpy(), grad.double().numpy() @ soft.T, rtol=1e-5, atol=1e-6)
    with pytest.raises(dwn.DWNError, match="tau"):
        dwn.LearnableMapping(5, 8, tau=0)


@pytest.mark.parametrize("fused", [False, True])
def test_wiring_follows_every_weight_update(fused):
    torch.manual_seed(1)
    layer = dwn.LUTLayer(6, 4, n=2, mapping="learnable")
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.5, fused=fused)  # fused: no version bump
    seen = []
    for _ in range(5):
        layer(torch.randn(8, 6)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        assert torch.equal(layer.wiring().view(-1), layer.mapping.weights.argmax(0))
        seen.append(layer.wiring().clone())
    assert any(not torch.equal(seen[0], s) for s in seen[1:])  # the wiring did move
    other = dwn.LUTLayer(6, 4, n=2, mapping="learnable")
    other.wiring()
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other.wiring(), layer.wiring())


def test_cached_wiring_holds_inside_the_block_only():
    from dwn_train.mapping import cached_wiring

    layer = dwn.LUTLayer(6, 4, n=2, mapping="learnable")
    with cached_wiring(layer):
        before = layer.wiring().clone()
        with torch.no_grad():
            layer.mapping.weights.mul_(-1)  # a change the block promises not to make
        assert torch.equal(layer.wiring(), before)
    assert torch.equal(layer.wiring().view(-1), layer.mapping.weights.argmax(0))


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 130, 2352])
def test_column_argmax_is_torch_first_argmax(rows):
    """The blocked CPU argmax agrees with torch.max(dim=0).indices: random weights, ties (the first
    maximum wins, also across blocks and in the overlapping last block) and NaNs."""
    from dwn_train.mapping import column_argmax

    gen = torch.Generator().manual_seed(rows)
    cases = [
        torch.rand(rows, 300, generator=gen),
        torch.randint(0, 3, (rows, 300), generator=gen).float(),  # many ties
        torch.zeros(rows, 5),  # all equal: row 0
    ]
    nan = torch.rand(rows, 300, generator=gen)
    nan[torch.rand(rows, 300, generator=gen) < 0.01] = float("nan")
    cases.append(nan)
    for w in cases:
        assert torch.equal(column_argmax(w), w.max(dim=0).indices)
