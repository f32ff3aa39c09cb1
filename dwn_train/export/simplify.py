"""The one simplification pass of a FrozenNetwork, and its numbering for the compiled engine.

Folding keeps the network's function bit for bit (the contract in freeze.py): a thermometer bit
whose threshold lies outside the input code range is a constant; a LUT input that is a constant is
fixed in the table; an input read twice keeps only the addresses where both copies agree; an input
the table ignores is dropped; a LUT left without inputs is a constant, and one that copies its only
input is a wire. LUTs and comparators that no live LUT reads are dropped (the last layer is live).

program(net) numbers what is left as templates/dwn_engine.c evaluates it: signals are first the
comparators, 64 per encoder block (one threshold index over 64 consecutive features, only blocks
with a comparator that is read), then one per LUT in evaluation order. Every LUT is stored with 6
inputs (a narrower one repeats an input its table does not depend on); a wider one is split on its
top inputs into LUT-6s and multiplexers (LUT-3s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .freeze import FrozenLayer, FrozenNetwork


@dataclass(frozen=True)
class Program:
    """The simplified network as the template wants it. Signals: 64 comparators per encoder block
    (block b, feature first + k at signal 64 b + k), then LUT outputs in evaluation order."""

    blocks: list  # [(first feature, threshold index)], sorted
    luts: list  # [(table (64,) uint8, 6 input signals)], address bit 0 first
    last: int  # the last layer's first signal; its signals are consecutive
    last_width: int


def _restrict(table: np.ndarray, bit: int, value: int) -> np.ndarray:
    """The truth table with address bit `bit` fixed to `value` (one input fewer)."""
    return table.reshape(-1, 2, 1 << bit)[:, value, :].reshape(-1)


def _ignored(tables: np.ndarray, bit: int) -> np.ndarray:
    """(N, 2^n) tables -> (N,) whether each ignores address bit `bit`."""
    halves = tables.reshape(len(tables), -1, 2, 1 << bit)
    return (halves[:, :, 0] == halves[:, :, 1]).all(axis=(1, 2))


def _merge(table: np.ndarray, low: int, high: int) -> np.ndarray:
    """Inputs low < high are the same signal: keep the addresses where the two bits agree, drop `high`."""
    n = int(table.size).bit_length() - 1
    grid = table.reshape(1 << (n - high - 1), 2, 1 << (high - low - 1), 2, 1 << low)
    return np.stack([grid[:, 0, :, 0, :], grid[:, 1, :, 1, :]], axis=2).reshape(-1)


def _fold(table: np.ndarray, refs: list):
    """A LUT whose inputs are refs ('s', signal) or ('c', constant bit) -> (table, signal refs) with
    no constant, repeated or ignored input left; a constant LUT comes back with no inputs. (Removing
    an input, constant or merged repeat, can make an earlier one ignored, e.g. a AND 0 or a XOR a:
    the scan then starts again.)"""
    refs, bit = list(refs), 0
    while bit < len(refs):
        kind, value = refs[bit]
        if kind == "c" or _ignored(table[None], bit)[0]:
            table = _restrict(table, bit, value if kind == "c" else 0)
        elif refs.index(refs[bit]) < bit:
            table = _merge(table, refs.index(refs[bit]), bit)
        else:
            bit += 1
            continue
        del refs[bit]
        bit = 0
    return table, refs


def _layer(wiring: np.ndarray, tables: np.ndarray, refs: list) -> list:
    """One layer's LUTs as ('c', bit) or ('l', table, input indices), constants and repeated or
    ignored inputs folded away. Most LUTs have none: they are found at once and kept as they are."""
    constant = np.array([kind == "c" for kind, _ in refs])[wiring].any(axis=1)
    ordered = np.sort(wiring, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    ignoring = np.any([_ignored(tables, bit) for bit in range(wiring.shape[1])], axis=0)
    nodes = [("l", table, list(inputs)) for table, inputs in zip(tables, wiring.tolist())]
    for j in np.flatnonzero(constant | repeated | ignoring):
        table, kept = _fold(tables[j], [refs[w] for w in wiring[j]])
        nodes[j] = ("l", table, [value for _, value in kept]) if kept else ("c", int(table[0]))
    return nodes


def _merged(net: FrozenNetwork) -> FrozenNetwork:
    """The same network with a thermometer bit equal to an earlier one of its feature (same
    threshold) read through that one."""
    z = net.num_bits
    first = np.arange(net.thresholds.size)
    for f, row in enumerate(net.thresholds):
        for i in range(z):
            earlier = np.flatnonzero(row[:i] == row[i])
            if len(earlier):
                first[f * z + i] = f * z + int(earlier[0])
    layers = [FrozenLayer(first[net.layers[0].wiring], net.layers[0].tables), *net.layers[1:]]
    return FrozenNetwork(net.input, net.num_features, net.thresholds, layers, net.num_classes)


def _simplify(net: FrozenNetwork) -> list:
    """Per layer, its LUTs as _layer gives them; thermometer bits whose threshold lies outside the
    code range are constants (below it always 1, at or above its top always 0)."""
    t = net.thresholds.reshape(-1)
    refs = [("c", 1) if v < net.input.lo else ("c", 0) if v >= net.input.hi else ("s", k) for k, v in enumerate(t)]
    layers = []
    for layer in net.layers:
        layers.append(_layer(layer.wiring, layer.tables.astype(np.uint8), refs))
        refs = [node[:2] if node[0] == "c" else ("s", j) for j, node in enumerate(layers[-1])]
    return layers


class _Emitter:
    """Appends LUTs of at most 6 inputs to a program, splitting wider ones on their top inputs."""

    def __init__(self, first_signal: int):
        self.luts: list = []
        self.next = first_signal

    def lut(self, table: np.ndarray, refs: list, folded: bool = True):
        """A ref ('s', signal) or ('c', bit) to the value of `table` over the input refs; `folded`
        promises no constant, repeated or ignored input (as _layer leaves them)."""
        if not folded or any(kind == "c" for kind, _ in refs) or len(set(refs)) < len(refs):
            table, refs = _fold(table, refs)
        if not refs:
            return ("c", int(table[0]))
        if len(refs) == 1 and table[0] == 0 and table[1] == 1:
            return refs[0]  # a wire
        if len(refs) > 6:  # Shannon split on the top input, then a multiplexer (a LUT-3)
            low = self.lut(_restrict(table, len(refs) - 1, 0), refs[:-1], folded=False)
            high = self.lut(_restrict(table, len(refs) - 1, 1), refs[:-1], folded=False)
            mux = np.array([0, 1, 0, 1, 0, 0, 1, 1], dtype=np.uint8)  # address low + 2 high + 4 select
            return self.lut(mux, [low, high, refs[-1]])
        return self.append(table, [value for _, value in refs])

    def append(self, table: np.ndarray, signals: list):
        """A LUT as the template stores it: 6 inputs (a narrower one repeats its first, or signal 0
        when it has none) and a 64-entry table that does not depend on the repeats."""
        padding = tuple(signals[:1] or [0]) * (6 - len(signals))
        self.luts.append((np.tile(table, 64 // len(table)), tuple(signals) + padding))
        self.next += 1
        return ("s", self.next - 1)


def _live(layers: list, comparators: int) -> list:
    """live[k][j]: whether LUT j of layer k is read, [0] for the comparators (all of the last layer is)."""
    live = [np.ones(len(layers[-1]), dtype=bool)]
    widths = [comparators] + [len(nodes) for nodes in layers[:-1]]
    for nodes, width in zip(layers[::-1], widths[::-1]):
        read = np.zeros(width, dtype=bool)
        for node, alive in zip(nodes, live[0]):
            if alive and node[0] == "l":
                read[node[2]] = True
        live.insert(0, read)
    return live


def _comparators(used: np.ndarray, z: int):
    """(blocks, refs): the encoder blocks holding the comparators `used` (bit f * z + i is feature f
    against threshold i), sorted, and each used comparator's signal."""
    block_of = {int(k): (int(k // z) // 64 * 64, int(k % z)) for k in used}
    blocks = sorted(set(block_of.values())) or [(0, 0)]  # the template wants one block at least
    position = {block: p for p, block in enumerate(blocks)}
    return blocks, {k: ("s", 64 * position[block] + k // z % 64) for k, block in block_of.items()}


def program(net: FrozenNetwork) -> Program:
    """The network simplified and numbered for templates/dwn_engine.c."""
    layers = _simplify(_merged(net))
    live = _live(layers, net.thresholds.size)
    blocks, refs = _comparators(np.flatnonzero(live[0]), net.num_bits)
    emitter = _Emitter(64 * len(blocks))
    for nodes, alive in zip(layers, live[1:]):
        first = emitter.next
        refs = {int(j): nodes[j][:2] if nodes[j][0] == "c" else emitter.lut(nodes[j][1], [refs[s] for s in nodes[j][2]])
                for j in np.flatnonzero(alive)}
    if [refs[j] for j in range(len(refs))] != [("s", first + j) for j in range(len(refs))]:
        first = emitter.next  # constants, wires or split LUTs: copy the last layer into consecutive signals
        for kind, value in (refs[j] for j in range(len(refs))):
            emitter.append(np.array([value] if kind == "c" else [0, 1], dtype=np.uint8), [] if kind == "c" else [value])
    return Program(blocks, emitter.luts, first, len(refs))


def counts(net: FrozenNetwork) -> dict:
    """What the simplification leaves, against the frozen network as trained: comparators (distinct
    (feature, threshold) pairs that a live LUT reads), LUTs (live, not constant) and LUT inputs."""
    layers = _simplify(_merged(net))
    live = _live(layers, net.thresholds.size)
    kept = [node for nodes, alive in zip(layers, live[1:]) for node, a in zip(nodes, alive) if a and node[0] == "l"]
    return {"comparators_before": int(net.thresholds.size), "comparators_after": int(live[0].sum()),
            "luts_before": sum(len(layer.tables) for layer in net.layers), "luts_after": len(kept),
            "lut_inputs_before": sum(layer.wiring.size for layer in net.layers),
            "lut_inputs_after": sum(len(node[2]) for node in kept)}


def reduce(net: FrozenNetwork) -> FrozenNetwork:
    """The simplified network in the frozen form (every back end reads it), bit for bit the same
    function: a thermometer bit equal to an earlier one of its feature (same threshold) is read
    through that one; every LUT is folded (constant, repeated and ignored inputs, as _fold) and keeps
    its inputs first, the rest of its layer's n inputs repeating its first input, with a table that
    does not depend on the repeats (a writer that reads only the inputs a table depends on, as the
    Verilog does, sees the folded LUT); a constant hidden LUT is propagated into its readers and,
    like every hidden LUT that nothing reads, removed (the next layer renumbered); a constant LUT of
    the last layer stays as a constant table; bits that no LUT reads get a threshold at the top
    code, a constant 0 that the writers emit as a constant. reduce(reduce(net)) == reduce(net)."""
    merged = _merged(net)
    thresholds = merged.thresholds.copy()
    nodes_per_layer = _simplify(merged)
    live = _live(nodes_per_layer, thresholds.size)
    position = np.arange(thresholds.size)  # the previous layer's signals, renumbered
    layers = []
    for layer, nodes, alive in zip(net.layers, nodes_per_layer, live[1:]):
        kept = np.flatnonzero(alive)
        if not len(kept):  # nothing reads this layer (a later one is constant): keep one constant LUT
            kept, nodes = [0], [("c", 0)]
        size = 1 << layer.n
        wiring = np.zeros((len(kept), layer.n), dtype=np.int64)
        tables = np.zeros((len(kept), size), dtype=np.uint8)
        for row, j in enumerate(kept):
            node = nodes[j]
            table, inputs = (np.array([node[1]], dtype=np.uint8), []) if node[0] == "c" else (node[1], node[2])
            signals = [int(position[i]) for i in inputs]
            wiring[row] = signals + (signals[:1] or [0]) * (layer.n - len(signals))
            tables[row] = np.tile(table, size // len(table))
        layers.append(FrozenLayer(wiring, tables))
        position = np.full(len(layer.tables), -1)
        position[kept] = np.arange(len(kept))
    thresholds.reshape(-1)[~live[0]] = net.input.hi  # read by no folded LUT (a padding input is not read)
    return FrozenNetwork(net.input, net.num_features, thresholds, layers, net.num_classes)


def folded(table: np.ndarray, wires) -> tuple[np.ndarray, list]:
    """One LUT as a writer emits it: (table over the inputs it depends on, those inputs), a
    constant when the list is empty (its value is table[0])."""
    table, refs = _fold(np.asarray(table, dtype=np.uint8), [("s", int(w)) for w in wires])
    return table, [value for _, value in refs]
