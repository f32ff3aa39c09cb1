"""Thermometer encoders against their definitions (tests/oracle.py)."""

import numpy as np
import pytest
import torch

import dwn_train as dwn
import oracle

KINDS = {"uniform": dwn.Thermometer, "gaussian": dwn.GaussianThermometer, "distributive": dwn.DistributiveThermometer}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("z", [1, 3, 7])
def test_feature_wise_thresholds_and_bits_match_definition(kind, z):
    rng = np.random.default_rng(z)
    data = rng.normal(size=(101, 4)) * [1, 10, 0.1, 3] + [0, 5, -2, 0]
    enc = KINDS[kind](z).fit(data)
    for f in range(4):
        expect = oracle.thermometer_thresholds(kind, data[:, f], z)
        np.testing.assert_allclose(enc.thresholds[f].numpy(), expect, rtol=1e-6, atol=1e-6)
    bits = enc.binarize(torch.from_numpy(data))
    assert bits.shape == (101, 4, z) and bits.dtype == torch.float32
    expect_bits = data[:, :, None] > enc.thresholds.double().numpy()[None]
    np.testing.assert_array_equal(bits.numpy(), expect_bits.astype(np.float32))


@pytest.mark.parametrize("kind", KINDS)
def test_global_thresholds_use_all_values(kind):
    data = torch.arange(40, dtype=torch.float32).view(10, 4)
    enc = KINDS[kind](3, feature_wise=False).fit(data)
    assert enc.thresholds.shape == (3,)
    np.testing.assert_allclose(enc.thresholds.numpy(), oracle.thermometer_thresholds(kind, data.view(-1).numpy(), 3),
                               rtol=1e-6)


def test_comparison_is_strict_and_images_keep_their_shape():
    enc = dwn.DistributiveThermometer(1).fit(torch.tensor([[0.0], [1.0], [2.0]]))
    assert enc.thresholds.item() == 1.0
    assert enc.binarize(torch.tensor([[1.0], [1.5]])).view(-1).tolist() == [0.0, 1.0]
    images = torch.randint(0, 256, (20, 2, 3, 3), dtype=torch.uint8)
    enc = dwn.Thermometer(2).fit(images)
    bits = enc.binarize(images)
    assert bits.shape == (20, 2, 3, 3, 2) and enc.thresholds.shape == (2, 3, 3, 2)  # per pixel
    assert torch.equal(bits, (images[..., None].double() > enc.thresholds.double()).to(bits.dtype))
    pixel = images[:, 1, 2, 0].double().numpy()
    np.testing.assert_allclose(enc.thresholds[1, 2, 0].numpy(), oracle.thermometer_thresholds("uniform", pixel, 2),
                               rtol=1e-6)


def test_state_dict_round_trip_into_unfitted_encoder():
    data = torch.randn(50, 6)
    enc = dwn.GaussianThermometer(4).fit(data)
    fresh = dwn.GaussianThermometer(4)
    fresh.load_state_dict(enc.state_dict())
    assert torch.equal(fresh.binarize(data), enc.binarize(data))


def test_errors_are_clear():
    with pytest.raises(dwn.DWNError, match="before fit"):
        dwn.Thermometer(3).binarize(torch.zeros(2, 2))
    for bad in (0, -1, 2.5):
        with pytest.raises(dwn.DWNError, match="num_bits"):
            dwn.Thermometer(bad)
    with pytest.raises(dwn.DWNError, match="NaN"):
        dwn.DistributiveThermometer(2).fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(dwn.DWNError, match="NaN"):
        dwn.Thermometer(2).fit(torch.tensor([[1.0], [float("inf")]]))
    enc = dwn.Thermometer(2).fit(torch.randn(5, 3))
    with pytest.raises(dwn.DWNError, match=r"feature shape \(3,\)"):
        enc.binarize(torch.randn(5, 4))
