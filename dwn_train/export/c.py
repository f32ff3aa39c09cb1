"""C99 export of a FrozenNetwork: one .h/.c pair, no dynamic allocation.

dwn_predict(x, scores) classifies one sample (LUTs as packed bit tables, for microcontrollers);
dwn_predict_batch(x, count, classes) classifies 64 samples per machine word, 512 per block (bit-sliced
multiplexer trees, as dwn_train/export/packed.py). Both follow the contract in freeze.py.

The C is C: templates/dwn_model.h, templates/dwn_runtime.c and templates/dwn_main.c are real C files.
Each of the first two holds the line MARKER once; Python replaces that line with a generated block
of #defines, typedefs and static const data (listed at the top of dwn_runtime.c) and writes the
rest verbatim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .freeze import FrozenNetwork, classes_markdown

# Inside the package in a checkout and in a wheel alike, so no second layout to look in (cf. resources.py).
TEMPLATES = Path(__file__).resolve().parent / "templates"
MARKER = "/* @DWN_GENERATED@ */"


def _ctype(lo: int, hi: int) -> str:
    for bits in (8, 16, 32):
        if lo >= 0 and hi < (1 << bits):
            return f"uint{bits}_t"
        if lo >= -(1 << (bits - 1)) and hi < (1 << (bits - 1)):
            return f"int{bits}_t"
    return "int64_t"


def _array(ctype: str, name: str, values, per_line: int = 16) -> str:
    items = [str(int(v)) if not ctype.startswith("uint64") else f"0x{int(v):016x}u" for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return f"static const {ctype} {name}[{len(items)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def table_words(tables: np.ndarray) -> np.ndarray:
    """(N, 2^n) bits -> (N, max(1, 2^n / 64)) uint64, entry a at bit a % 64 of word a // 64."""
    num, size = tables.shape
    words = max(1, size // 64)
    padded = np.zeros((num, words * 64), dtype=np.uint8)
    padded[:, :size] = tables
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(num, words)


def template(filename: str) -> str:
    path = TEMPLATES / filename
    if not path.is_file():
        raise FileNotFoundError(f"dwn-train's template {path} is missing; reinstall the package.")
    return path.read_text()


def splice(text: str, block: str) -> str:
    """The template with its marker line replaced by `block` (whole lines, ending in a newline)."""
    before, marker, after = text.partition(MARKER + "\n")
    if not marker or MARKER in after:
        raise ValueError(f"a template must hold the line {MARKER} exactly once")
    return before + block + after


def _header_block(net: FrozenNetwork) -> str:
    """The public #defines and dwn_input_t, for templates/dwn_model.h."""
    fmt = net.input
    return (f"/* This model: {fmt.bits}-bit {'signed' if fmt.signed else 'unsigned'} codes with {fmt.frac_bits} "
            f"fraction bits; a class score counts a group of {net.group} output bits. */\n"
            f"#define DWN_NUM_FEATURES {net.num_features}\n"
            f"#define DWN_NUM_CLASSES {net.num_classes}\n"
            f"#define DWN_INPUT_BITS {fmt.bits}\n"
            f"#define DWN_INPUT_FRAC_BITS {fmt.frac_bits}\n"
            f"typedef {_ctype(fmt.lo, fmt.hi)} dwn_input_t;\n")


def _source_block(net: FrozenNetwork, name: str) -> str:
    """What templates/dwn_runtime.c asks of its generated block: sizes, dwn_wire_t and the data."""
    widths = [net.num_features * net.num_bits] + [len(layer.tables) for layer in net.layers]
    wire_t = _ctype(0, max(widths))
    lines = [f'#include "{name}.h"', "",
             f"#define DWN_NUM_BITS {net.num_bits}",
             f"#define DWN_NUM_LAYERS {len(net.layers)}",
             f"#define DWN_MAX_WORDS {-(-max(widths) // 64)}",
             f"#define DWN_MAX_N {max(layer.n for layer in net.layers)}",
             f"#define DWN_GROUP {net.group}",
             f"#define DWN_LAST_WIDTH {widths[-1]}",
             f"#define DWN_SCORE_BITS {max(1, net.group.bit_length())}",
             f"typedef {wire_t} dwn_wire_t;", "",
             _array("int32_t", "dwn_thresholds", net.thresholds.reshape(-1))]
    descriptors = []
    for k, layer in enumerate(net.layers):
        words = table_words(layer.tables)
        lines.append(_array(wire_t, f"dwn_wiring_{k}", layer.wiring.reshape(-1)))
        lines.append(_array("uint64_t", f"dwn_tables_{k}", words.reshape(-1), per_line=4))
        descriptors.append(f"    {{{layer.n}, {len(layer.tables)}, {words.shape[1]}, dwn_wiring_{k}, dwn_tables_{k}}}")
    lines.append("/* {n, count, table_words, wiring, tables} per layer, input side first. */")
    lines.append("#define DWN_LAYERS \\\n" + ", \\\n".join(descriptors))
    return "\n".join(lines) + "\n"


def generate(net: FrozenNetwork, name: str = "dwn_model") -> dict[str, str]:
    """{filename: text} of the header and the source."""
    return {f"{name}.h": splice(template("dwn_model.h"), _header_block(net)),
            f"{name}.c": splice(template("dwn_runtime.c"), _source_block(net, name))}


def readme(net: FrozenNetwork, class_names=None) -> str:
    return (f"# dwn_model (generated by dwn-train)\n\nFiles: `dwn_model.h`/`dwn_model.c` (C99, no allocation): "
            f"`dwn_predict(x, scores)` for one sample, `dwn_predict_batch(x, count, classes)` for many; "
            f"`dwn_main.c`, a stdin-to-stdout driver used for verification. The input format is in "
            f"`dwn_model.h`.\n\n{classes_markdown(net.num_classes, class_names)}")


def write(net: FrozenNetwork, out_dir: Path, class_names=None) -> list[Path]:
    """The model as dwn_model.h/.c plus dwn_main.c, a stdin-to-stdout driver for verification,
    and a README with the class labels."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    files = {**generate(net), "dwn_main.c": template("dwn_main.c"), "README.md": readme(net, class_names)}
    for filename, text in files.items():
        (out_dir / filename).write_text(text)
        paths.append(out_dir / filename)
    return paths
