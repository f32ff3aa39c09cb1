"""Hardware cost of a FrozenNetwork: LUTs, comparators, popcount adders, argmax, registers, C bytes."""

from __future__ import annotations

from .c import ctype, table_words
from .freeze import FrozenNetwork
from .simplify import counts as simplified_counts
from .verilog import Design, class_width, design, score_width


def lut6_equivalents(n: int) -> int:
    """LUT-6s for one n-input LUT: 1 up to n = 6, else 2^(n-6) LUT-6s and the muxes joining them."""
    return 1 if n <= 6 else 2 ** (n - 6) + 2 ** (n - 6) - 1


def _working(layer) -> int:
    """The LUTs of a layer that are not constants (a constant costs no LUT in Verilog)."""
    return int((layer.tables.min(axis=1) != layer.tables.max(axis=1)).sum())


def cost_numbers(net: FrozenNetwork, pipeline: str = "none", original: FrozenNetwork | None = None,
                 built: Design | None = None) -> dict:
    """The countable costs of `net` as numbers (cost.json's keys; cost_report formats them); the
    before/after simplification counts start from `original` (the network as frozen) when given;
    `built`: the Verilog design(net, pipeline), when the caller already has it."""
    fmt, built = net.input, built or design(net, pipeline)
    working = [_working(layer) for layer in net.layers]
    return {**simplified_counts(original if original is not None else net),
            "comparators": int(((net.thresholds >= fmt.lo) & (net.thresholds < fmt.hi)).sum()),
            "thermometer_bits": int(net.thresholds.size),
            "luts": sum(working),
            "lut6_equivalents": sum(w * lut6_equivalents(layer.n) for w, layer in zip(working, net.layers)),
            "adder_nodes": net.num_classes * (net.group - 1),
            "registers": built.registers,
            "latency_cycles": built.latency,
            "input_bits": fmt.bits}


def cost_report(net: FrozenNetwork, pipeline: str = "none", original: FrozenNetwork | None = None,
                numbers: dict | None = None) -> dict:
    """The cost table's rows; `numbers`: cost_numbers of the same arguments, when already computed."""
    numbers = numbers or cost_numbers(net, pipeline, original)
    fmt, rows = net.input, {}
    rows["encoder comparators"] = f"{numbers['comparators']} x {fmt.bits}-bit (of {numbers['thermometer_bits']} " \
                                  "thermometer bits)"
    for k, layer in enumerate(net.layers):
        working = _working(layer)
        constants = len(layer.tables) - working
        rows[f"layer {k + 1}"] = f"{working} LUT-{layer.n} ({working * lut6_equivalents(layer.n)} " \
                                 "LUT-6 equivalents)" + (f" and {constants} constant outputs" if constants else "")
    rows["LUTs (LUT-6 equivalents)"] = f"{numbers['luts']} ({numbers['lut6_equivalents']})"
    rows["after simplification"] = (
        f"comparators {numbers['comparators_before']} -> {numbers['comparators_after']}, LUTs "
        f"{numbers['luts_before']} -> {numbers['luts_after']}, LUT inputs {numbers['lut_inputs_before']} -> "
        f"{numbers['lut_inputs_after']} (Verilog and the compiled engine emit this)")
    rows["popcount adder trees"] = (f"{net.num_classes} x {net.group}-input -> {score_width(net)} bits "
                                    f"({numbers['adder_nodes']} two-input adder nodes)")
    rows["argmax"] = f"{net.num_classes - 1} x {score_width(net)}-bit comparators -> {class_width(net)} bits"
    rows["registers"] = numbers["registers"]
    rows["latency (clock cycles)"] = f"{numbers['latency_cycles']} (pipeline={pipeline})" if numbers["latency_cycles"] \
        else "0 (combinational)"
    widest = max(net.num_features * net.num_bits, *(len(l.tables) for l in net.layers))
    wire_bytes = int(ctype(0, widest).removeprefix("uint").removesuffix("_t")) // 8  # as the C export types it
    table_bytes = sum(table_words(l.tables).size * 8 for l in net.layers)
    wiring_bytes = sum(l.wiring.size * wire_bytes for l in net.layers)
    rows["C tables (bytes)"] = f"{table_bytes + wiring_bytes + net.thresholds.size * 4} (truth tables {table_bytes}, " \
                               f"wiring {wiring_bytes}, thresholds {net.thresholds.size * 4})"
    return rows
