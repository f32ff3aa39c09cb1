"""simplify.reduce: the network every writer emits, smaller and bit-exact."""

import numpy as np

from dwn_train.export.freeze import FrozenLayer, FrozenNetwork, InputFormat
from dwn_train.export.simplify import counts, reduce


def _random_network(rng) -> FrozenNetwork:
    """Unsigned 8-bit or signed 5-bit inputs, thresholds also below and above the code range
    (constant bits), equal thresholds on a feature, and tables often near constant."""
    fmt = InputFormat(8, 0, False) if rng.random() < 0.5 else InputFormat(5, 0, True)
    features, bits = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    thresholds = np.sort(rng.integers(fmt.lo - 3, fmt.hi + 3, (features, bits)), axis=1)
    thresholds[:, -1] = thresholds[:, 0]  # equal thresholds on a feature
    classes = int(rng.integers(2, 4))
    widths = [features * bits, *rng.integers(2, 12, int(rng.integers(0, 3))), classes * int(rng.integers(1, 4))]
    layers = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        n = int(rng.integers(1, 4))
        ones = rng.choice([0.05, 0.5, 0.95], size=(width_out, 1))  # some tables (near) constant
        layers.append(FrozenLayer(rng.integers(0, width_in, (width_out, n)),
                                  (rng.random((width_out, 2**n)) < ones).astype(np.uint8)))
    return FrozenNetwork(fmt, features, thresholds, layers, classes)


def _codes(net, rng, count=100):
    return rng.integers(net.input.lo, net.input.hi + 1, (count, net.num_features))


def test_reduce_keeps_every_score_of_random_networks():
    rng = np.random.default_rng(0)
    for _ in range(300):
        net = _random_network(rng)
        q = _codes(net, rng)
        assert np.array_equal(reduce(net).scores(q), net.scores(q))


def test_reduce_merges_equal_thresholds_and_drops_unread_luts_and_bits():
    thresholds = np.array([[10, 10, 90]])  # bits 0 and 1 are one comparator
    hidden = FrozenLayer(np.array([[1, 0], [2, 2], [0, 1]]), np.eye(4, dtype=np.uint8)[[1, 2, 3]])
    last = FrozenLayer(np.array([[0], [2]]), np.array([[0, 1], [1, 0]], dtype=np.uint8))  # hidden LUT 1 unread
    net = FrozenNetwork(InputFormat(8, 0, False), 1, thresholds, [hidden, last], 2)
    small = reduce(net)
    # bit 1 is read as bit 0, so hidden LUT 0 (b0 and not b1) is the constant 0 and LUT 2 (b0 and b1)
    # is a wire of bit 0; LUT 1 is unread: only LUT 2 is left, and class 0 is a constant
    assert small.layers[0].wiring.tolist() == [[0, 0]]
    assert small.layers[0].tables.tolist() == [[0, 1, 0, 1]]
    assert small.layers[1].wiring.tolist() == [[0], [0]]  # renumbered
    assert small.layers[1].tables.tolist() == [[0, 0], [1, 0]]
    assert small.thresholds.tolist() == [[10, 255, 255]]  # unread bits: constant 0 (never above 255)
    # one comparator (bit 0) is read; hidden LUT 2 (a wire of bit 0) and class 1's LUT (its NOT) are
    # the working LUTs, one input each; class 0's constant is not a LUT
    assert counts(net) == {"comparators_before": 3, "comparators_after": 1, "luts_before": 5, "luts_after": 2,
                           "lut_inputs_before": 8, "lut_inputs_after": 2}
    q = np.arange(256).reshape(-1, 1)
    assert np.array_equal(small.scores(q), net.scores(q))


def _layers_of(net):
    return [(layer.wiring.tolist(), layer.tables.tolist()) for layer in net.layers], net.thresholds.tolist()


def test_reduce_folds_every_lut_and_is_idempotent():
    """Each LUT of the reduced network reads its folded inputs first and only repeats them after (a
    writer that keeps the inputs a table depends on sees exactly those), no hidden LUT is constant,
    and reducing again changes nothing."""
    from dwn_train.export.simplify import folded

    rng = np.random.default_rng(1)
    for _ in range(200):
        small = reduce(_random_network(rng))
        for k, layer in enumerate(small.layers):
            for wires, table in zip(layer.wiring.tolist(), layer.tables):
                kept_table, inputs = folded(table, wires)
                assert inputs == wires[:len(inputs)]
                assert set(wires[len(inputs):]) <= set(wires[:1])
                # constants survive in the last layer only (or as the one LUT of a layer nothing reads)
                assert inputs or k == len(small.layers) - 1 or len(layer.tables) == 1
        assert _layers_of(reduce(small)) == _layers_of(small)


def _constant_and_ignored_network() -> FrozenNetwork:
    """Hidden LUT 0 is the constant 1, hidden LUT 1 ANDs bits 1 and 2, hidden LUT 2 copies bit 0 and
    ignores bit 2; class 0 ANDs hidden 0 and 1 (so it is hidden 1), class 1 XORs hidden 2 and 1."""
    hidden = FrozenLayer(np.array([[0, 1], [1, 2], [0, 2]]),
                         np.array([[1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 0, 1]], dtype=np.uint8))
    last = FrozenLayer(np.array([[0, 1], [2, 1]]), np.array([[0, 0, 0, 1], [0, 1, 1, 0]], dtype=np.uint8))
    return FrozenNetwork(InputFormat(8, 0, False), 1, np.array([[10, 50, 90]]), [hidden, last], 2)


def test_reduce_propagates_constant_luts_and_drops_ignored_inputs():
    net = _constant_and_ignored_network()
    small = reduce(net)
    assert small.layers[0].wiring.tolist() == [[1, 2], [0, 0]]  # the constant LUT is gone; LUT 2 reads bit 0 only
    assert small.layers[0].tables.tolist() == [[0, 0, 0, 1], [0, 1, 0, 1]]
    assert small.layers[1].wiring.tolist() == [[0, 0], [1, 0]]  # class 0 is a wire of (new) hidden 0
    assert counts(net) == {"comparators_before": 3, "comparators_after": 3, "luts_before": 5, "luts_after": 4,
                           "lut_inputs_before": 10, "lut_inputs_after": 6}
    q = np.arange(256).reshape(-1, 1)
    assert np.array_equal(small.scores(q), net.scores(q))


def test_verilog_reads_only_the_inputs_a_table_depends_on(tmp_path):
    import shutil

    from dwn_train.export import simulate, verilog

    net = _constant_and_ignored_network()
    text = verilog.generate(net)
    assert "assign l1[0] = 1'b1;" in text  # a constant LUT is a constant
    assert "assign l1[2] = e[0];" in text  # the ignored input is not read
    small = verilog.generate(reduce(net))
    assert "assign l1[1] = e[0];" in small and "assign l2[0] = l1[0];" in small
    if shutil.which("iverilog"):
        q = np.arange(256).reshape(-1, 1)
        verilog.write(reduce(net), tmp_path, q)
        assert simulate.run_testbench(tmp_path, "iverilog", len(q)).startswith("PASS 256 vectors")


def test_a_network_whose_classes_are_constant_stays_exact_in_verilog(tmp_path):
    """Every last-layer LUT constant: nothing reads the hidden layer (reduce keeps one constant LUT
    there so the form stays valid) and the Verilog scores are constants."""
    import shutil

    from dwn_train.export import simulate, verilog

    hidden = FrozenLayer(np.array([[0, 1], [1, 2]]), np.array([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.uint8))
    last = FrozenLayer(np.array([[0, 1], [1, 0], [0, 0]]),
                       np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=np.uint8))
    net = FrozenNetwork(InputFormat(8, 0, False), 1, np.array([[10, 50, 90]]), [hidden, last], 3)
    small = reduce(net)
    assert len(small.layers[0].tables) == 1 and counts(net)["luts_after"] == 0
    q = np.arange(256).reshape(-1, 1)
    assert np.array_equal(small.scores(q), net.scores(q))
    if shutil.which("iverilog"):
        verilog.write(small, tmp_path, q[::8])
        assert simulate.run_testbench(tmp_path, "iverilog", len(q[::8])).startswith("PASS 32 vectors")
