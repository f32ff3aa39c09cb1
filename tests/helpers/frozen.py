"""Small frozen networks and models that several export tests freeze."""

from __future__ import annotations


def tie_network(bit: int):
    """A FrozenNetwork whose every LUT outputs `bit` (8-bit codes, 2 features, 3 classes): all class
    scores tie, so the answer must be class 0 everywhere."""
    import numpy as np

    from dwn_train.export.freeze import FrozenLayer, FrozenNetwork, InputFormat

    layer = FrozenLayer(np.zeros((6, 2), dtype=np.int64), np.full((6, 4), bit, dtype=np.uint8))
    return FrozenNetwork(InputFormat(8, 0, False), 2, np.array([[10], [200]]), [layer], 3)


def signed_fixed_point_model(samples: int):
    """(x, encoder, model): features of mixed scales with negative values (a signed 16-bit input
    format), a Gaussian thermometer fitted on them and an untrained two-layer network in eval mode."""
    import numpy as np
    import torch

    import dwn_train as dwn

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(samples, 6)) * [1, 5, 0.1, 20, 1, 1]
    encoder = dwn.GaussianThermometer(5).fit(x)
    model = torch.nn.Sequential(dwn.LUTLayer(30, 40, n=4), dwn.LUTLayer(40, 21, n=3), dwn.GroupSum(3)).eval()
    return x, encoder, model
