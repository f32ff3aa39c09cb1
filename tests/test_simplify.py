"""simplify.reduce: the network every writer emits, smaller and bit-exact."""

import numpy as np

from dwn_train.export.freeze import FrozenLayer, FrozenNetwork, InputFormat
from dwn_train.export.simplify import counts, reduce


def _random_network(rng) -> FrozenNetwork:
    features, bits = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    thresholds = np.sort(rng.integers(0, 256, (features, bits)), axis=1)
    thresholds[:, -1] = thresholds[:, 0]  # equal thresholds on a feature
    classes = int(rng.integers(2, 4))
    widths = [features * bits, *rng.integers(2, 12, int(rng.integers(0, 3))), classes * int(rng.integers(1, 4))]
    layers = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        n = int(rng.integers(1, 4))
        layers.append(FrozenLayer(rng.integers(0, width_in, (width_out, n)),
                                  rng.integers(0, 2, (width_out, 2**n)).astype(np.uint8)))
    return FrozenNetwork(InputFormat(8, 0, False), features, thresholds, layers, classes)


def test_reduce_keeps_every_score_of_random_networks():
    rng = np.random.default_rng(0)
    for _ in range(200):
        net = _random_network(rng)
        q = rng.integers(0, 256, (100, net.num_features))
        assert np.array_equal(reduce(net).scores(q), net.scores(q))


def test_reduce_merges_equal_thresholds_and_drops_unread_luts_and_bits():
    thresholds = np.array([[10, 10, 90]])  # bits 0 and 1 are one comparator
    hidden = FrozenLayer(np.array([[1, 0], [2, 2], [0, 1]]), np.eye(4, dtype=np.uint8)[[1, 2, 3]])
    last = FrozenLayer(np.array([[0], [2]]), np.array([[0, 1], [1, 0]], dtype=np.uint8))  # hidden LUT 1 unread
    net = FrozenNetwork(InputFormat(8, 0, False), 1, thresholds, [hidden, last], 2)
    small = reduce(net)
    assert small.layers[0].wiring.tolist() == [[0, 0], [0, 0]]  # bit 1 read as bit 0; LUT 1 gone
    assert small.layers[1].wiring.tolist() == [[0], [1]]  # renumbered
    assert small.thresholds.tolist() == [[10, 255, 255]]  # unread bits: constant 0 (never above 255)
    assert counts(net)["luts_after"] <= len(small.layers[0].tables) + len(small.layers[1].tables)
    q = np.arange(256).reshape(-1, 1)
    assert np.array_equal(small.scores(q), net.scores(q))
