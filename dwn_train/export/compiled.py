"""The compiled packed engine: a FrozenNetwork as native code, built once per network and machine.

    predict(net, q, threads=None)           integer codes (S, F) -> (classes (S,), scores (S, C) or None)
    predict_features(net, x, threads=None)  real features, quantised as InputFormat.quantise does

Both take numpy arrays or torch tensors, split the batch into blocks of 512 samples shared out to
`threads` threads (default: every core this process may use), and follow the contract in freeze.py
bit for bit. The C is templates/dwn_engine.c with one generated block of defines and data: the
network after simplify.py's pass (its encoder blocks, thresholds, LUT wiring and truth tables).

The C compiler, its flags and the library cache live in cbuild.py; this module gives it the C and
each network's key, which hashes the network's content, the files the C is made from (the template,
this module, simplify.py and cbuild.py) and cbuild.identity(compiler) (the CC command, the compiler
binary, FLAGS, the CPU). A process hashes each network object once, so build a new FrozenNetwork
rather than editing one in place. Without a compiler, when a build fails, or when no folder can hold
the library, predict runs the numpy engine (packed.py) after one warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import weakref
from pathlib import Path

import numpy as np

from ..errors import DWNError, RunError
from . import cbuild, template
from .c import ctype
from .cbuild import warn_once
from .freeze import FrozenNetwork
from .packed import predict_packed
from .simplify import program

TEMPLATE = "dwn_engine.c"
_KEYS: dict = {}  # id(net) -> (weak reference, compiler, flags, key): a network is hashed once


def _c_array(values, per_line: int = 32) -> str:
    items = [str(int(v)) for v in values]
    return ",\n    ".join(", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def _c_int(value: int) -> str:
    return f"({value + 1} - 1)" if value < 0 else str(value)  # -2147483648 is not an int literal in C


def _block_data(net: FrozenNetwork, blocks: list) -> list:
    """C lines for the encoder: per block its 64 thresholds, per chunk its first feature and blocks."""
    fmt = net.input
    thresholds = np.full((len(blocks), 64), fmt.hi, dtype=np.int64)
    for p, (first, i) in enumerate(blocks):
        column = net.thresholds[first:first + 64, i]
        thresholds[p, :len(column)] = np.clip(column, fmt.lo, fmt.hi)  # out-of-range ones were folded away
    firsts = sorted({first for first, _ in blocks})
    starts = [sum(1 for f, _ in blocks if f < first) for first in firsts] + [len(blocks)]
    return [f"#define DWN_NUM_BLOCKS {len(blocks)}",
            f"static const dwn_input_t dwn_block_thresholds[{len(blocks)}][64] __attribute__((aligned(64))) = {{",
            "    " + ",\n    ".join("{" + _c_array(row) + "}" for row in thresholds) + "};",
            f"#define DWN_NUM_CHUNKS {len(firsts)}",
            f"static const int dwn_chunk_first[{len(firsts)}] = {{{_c_array(firsts)}}};",
            f"static const int dwn_chunk_blocks[{len(starts)}] = {{{_c_array(starts)}}};"]


def source(net: FrozenNetwork, key: str = "") -> str:
    """templates/dwn_engine.c with this network's block spliced in (the block's contents are listed
    at the top of the template)."""
    prog, fmt = program(net), net.input
    input_t = ctype(fmt.lo, fmt.hi)
    signals = 64 * len(prog.blocks) + len(prog.luts)
    tables = np.array([table for table, _ in prog.luts], dtype=np.uint8).reshape(-1, 16, 4)
    nibbles = (tables << np.arange(4, dtype=np.uint8)).sum(-1)  # nibble k = entries 4k..4k+3
    group = -(-prog.last_width // net.num_classes)
    lines = [f"#define DWN_NUM_FEATURES {net.num_features}", f"#define DWN_NUM_CLASSES {net.num_classes}",
             f"typedef {input_t} dwn_input_t;", f"#define DWN_INPUT_BYTES {np.dtype(input_t[:-2]).itemsize}",
             f"#define DWN_INPUT_SIGNED {int(fmt.signed)}", f"#define DWN_INPUT_LO {_c_int(fmt.lo)}",
             f"#define DWN_INPUT_HI {fmt.hi}",
             f"static const float dwn_scale[DWN_NUM_FEATURES] = {{{', '.join(f'{float(s)!r}f' for s in fmt.scales(net.num_features))}}};",
             *_block_data(net, prog.blocks),
             f"typedef {ctype(0, signals)} dwn_wire_t;", f"#define DWN_NUM_SIGNALS {signals}",
             f"#define DWN_NUM_LUTS {len(prog.luts)}",
             f"static const dwn_wire_t dwn_lut_inputs[{len(prog.luts)}][6] = {{",
             "    " + ",\n    ".join("{" + _c_array(inputs) + "}" for _, inputs in prog.luts) + "};",
             f"static const uint8_t dwn_lut_nibbles[{len(prog.luts)}][16] = {{",
             "    " + ",\n    ".join("{" + _c_array(row) + "}" for row in nibbles) + "};",
             f"#define DWN_LAST {prog.last}", f"#define DWN_LAST_WIDTH {prog.last_width}", f"#define DWN_GROUP {group}",
             f"#define DWN_SCORE_BITS {max(1, group.bit_length())}",
             f"#define DWN_CLASS_BITS {max(1, (net.num_classes - 1).bit_length())}", f'#define DWN_KEY "{key}"']
    return template.fill(TEMPLATE, "\n".join(lines) + "\n")


def _network_bytes(net: FrozenNetwork):
    fmt = net.input
    yield repr((fmt.bits, fmt.frac_bits, fmt.signed, net.num_features, net.num_classes)).encode()
    for array in [net.thresholds] + [a for layer in net.layers for a in (layer.wiring, layer.tables)]:
        array = np.ascontiguousarray(array)
        yield repr((array.shape, array.dtype.str)).encode() + array.tobytes()


def cache_key(net: FrozenNetwork, compiler: tuple[str, ...]) -> str:
    """Hash of the network, the files its C is made from, and cbuild.identity(compiler)."""
    digest = hashlib.sha256()
    for part in _network_bytes(net):
        digest.update(part)
    here = Path(__file__)
    for text in (template.path(TEMPLATE).read_bytes(), here.read_bytes(), here.with_name("simplify.py").read_bytes(),
                 Path(cbuild.__file__).read_bytes(), cbuild.identity(compiler)):
        digest.update(hashlib.sha256(text).digest())
    return digest.hexdigest()[:32]


def _key(net: FrozenNetwork, compiler: tuple[str, ...]) -> str:
    """cache_key, remembered per network object (so build a new FrozenNetwork, do not edit one)."""
    entry = _KEYS.get(id(net))
    if entry is None or entry[0]() is not net or entry[1:3] != (compiler, cbuild.FLAGS):
        entry = (weakref.ref(net), compiler, cbuild.FLAGS, cache_key(net, compiler))
        _KEYS[id(net)] = entry
    return entry[3]


def library(net: FrozenNetwork, compiler: tuple[str, ...] | None = None):
    """The network's engine as a loaded ctypes library (cbuild.load: memo, disk cache, temporary
    folder or built now). Raises RunError when no compiler is found, the build fails or no folder
    can hold it; DWNError when $CC names no program."""
    compiler = compiler or cbuild.find_compiler()
    if compiler is None:
        raise RunError("no C compiler was found (looked for cc, gcc and clang; set CC to use another)")
    key = _key(net, compiler)
    lib = cbuild.load(key, compiler, lambda: source(net, key))
    lib.dwn_run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int]
    lib.dwn_run.restype = ctypes.c_int
    return lib


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _rows(net: FrozenNetwork, x) -> np.ndarray:
    """numpy array or torch tensor (S, ...) -> numpy (S, F), no copy when already so."""
    if hasattr(x, "detach"):  # a torch tensor; no torch import needed to recognise one
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    x = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
    if x.shape[1] != net.num_features:
        raise DWNError(f"The frozen network expects {net.num_features} features per sample; got {x.shape[1]}.")
    return x


def _codes(net: FrozenNetwork, q: np.ndarray) -> np.ndarray:
    """Integer codes in the engine's input type (checked to lie in the format's range)."""
    fmt = net.input
    dtype = np.dtype(ctype(fmt.lo, fmt.hi)[:-2])
    if q.dtype != dtype:
        if q.dtype.kind not in "iub":
            raise DWNError(f"Input codes must be integers; got {q.dtype} (real features go to predict_features).")
        if q.size and (q.min() < fmt.lo or q.max() > fmt.hi):
            raise DWNError(f"Input codes must lie in {fmt.lo}..{fmt.hi} ({fmt.bits}-bit "
                           f"{'signed' if fmt.signed else 'unsigned'}); got {q.min()}..{q.max()}.")
        q = q.astype(dtype)
    return np.ascontiguousarray(q)


def _run(net: FrozenNetwork, x: np.ndarray, real: bool, threads: int | None, scores: bool):
    """The engine on prepared rows, or None (after one warning) when it cannot be built here."""
    if not len(x):
        return np.zeros(0, dtype=np.int64), np.zeros((0, net.num_classes), dtype=np.int64) if scores else None
    try:
        lib = library(net)
    except RunError as exc:
        warn_once(f"The packed engine runs in numpy, much slower, because {str(exc).rstrip('.')}.")
        return None
    classes = np.empty(len(x), dtype=np.int32)
    out = np.empty((len(x), net.num_classes), dtype=np.int32) if scores else None
    status = lib.dwn_run(x.ctypes.data, int(real), len(x), classes.ctypes.data,
                         None if out is None else out.ctypes.data, threads or default_threads())
    if status == -2:
        net.input.quantise(x)  # raises the contract's own sentence, naming the first NaN
    if status != 0:
        raise RunError("the compiled engine could not allocate its per-thread buffers (out of memory).")
    return classes.astype(np.int64), None if out is None else out.astype(np.int64)


def predict(net: FrozenNetwork, q, threads: int | None = None, scores: bool = True):
    """Integer codes q (S, F) (numpy or torch) -> (classes (S,) int64, scores (S, C) int64 or None),
    on `threads` threads (default: every core this process may use)."""
    q = _rows(net, q)
    done = _run(net, _codes(net, q), False, threads, scores)
    if done is None:
        classes, all_scores = predict_packed(net, q)
        done = classes, all_scores if scores else None
    return done


def predict_features(net: FrozenNetwork, x, threads: int | None = None, scores: bool = True):
    """Real features x (S, F) -> as predict, quantised by the contract (round down, saturate);
    float32 input is quantised inside the engine, in parallel."""
    x = _rows(net, x)
    if x.dtype == np.float32:
        done = _run(net, np.ascontiguousarray(x), True, threads, scores)
        if done is not None:
            return done
    return predict(net, net.input.quantise(x), threads, scores)
