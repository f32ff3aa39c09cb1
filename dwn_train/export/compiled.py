"""The compiled packed engine: a FrozenNetwork as native code, built once per network and machine.

    predict(net, q, threads=None)           integer codes (S, F) -> (classes (S,), scores (S, C) or None)
    predict_features(net, x, threads=None)  real features, quantised as InputFormat.quantise does

Both take numpy arrays or torch tensors, split the batch into blocks of 512 samples shared out to
`threads` threads (default: every core this process may use), and follow the contract in freeze.py
bit for bit. The C is templates/dwn_engine.c with one generated block of defines and data: the
network after simplify.py's pass (its encoder blocks, thresholds, LUT wiring and truth tables).

This module is the one place that knows the C compiler. find_compiler() takes $CC when it is set
(a CC that names no program is refused: the user asked for that compiler), else the first of cc,
gcc and clang; the library is built with FLAGS (-O3 -march=native -pthread) and cached as
<cache_dir()>/<key>.so, the key hashing the network's content, the template, this module, the
compiler (resolved path, size, mtime), FLAGS and the CPU's feature flags; a process hashes each
network object once, so build a new FrozenNetwork rather than editing one in place. A cache folder
that cannot be written (or whose library does not load) gives way to a private temporary folder
for this process, after one warning naming DWN_CACHE_DIR. Without a compiler, when a build fails,
or when no folder can hold the library, predict runs the numpy engine (packed.py) after one warning.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import weakref
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import console
from ..errors import DWNError, RunError, os_reason
from . import template
from .c import ctype
from .freeze import FrozenNetwork
from .packed import predict_packed
from .simplify import program

TEMPLATE = "dwn_engine.c"
FLAGS = ("-std=gnu11", "-O3", "-march=native", "-pthread", "-shared", "-fPIC")
PORTABLE_FLAGS = tuple(f for f in FLAGS if f != "-march=native")  # when the compiler knows no -march=native
_LIBRARIES: dict = {}  # key -> ctypes library, loaded once per process
_FAILED: dict = {}  # key -> the RunError of its failed build
_WARNED: set = set()
_TEMPORARY: dict = {}  # "folder" -> this process's private fallback folder, made on first need


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
             f"#define DWN_INPUT_HI {fmt.hi}", f"#define DWN_SCALE {float(2 ** fmt.frac_bits)!r}f",
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


def find_compiler() -> str | None:
    """The C compiler to use: $CC when set (DWNError when it names no program on the PATH), else the
    first of cc, gcc, clang on the PATH, else None."""
    wanted = os.environ.get("CC", "").strip()
    if wanted:
        path = shutil.which(wanted)
        if path is None:
            words = " (the compiled engine takes one program name or path in CC)" if len(wanted.split()) > 1 else ""
            raise DWNError(f"CC={wanted} names no compiler on the PATH{words}; install it, or unset CC to let the "
                           "packed engine use cc, gcc or clang.")
        return path
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_dir() -> Path:
    """$DWN_CACHE_DIR, else $XDG_CACHE_HOME/dwn-train, else ~/.cache/dwn-train; compiled/ inside."""
    if os.environ.get("DWN_CACHE_DIR"):
        return Path(os.environ["DWN_CACHE_DIR"]) / "compiled"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dwn-train" / "compiled"


@lru_cache(maxsize=None)
def _machine() -> str:
    """What -march=native depends on: the architecture and, on Linux, the CPU's feature flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return platform.machine() + " " + flags.strip()


def _network_bytes(net: FrozenNetwork):
    fmt = net.input
    yield repr((fmt.bits, fmt.frac_bits, fmt.signed, net.num_features, net.num_classes)).encode()
    for array in [net.thresholds] + [a for layer in net.layers for a in (layer.wiring, layer.tables)]:
        array = np.ascontiguousarray(array)
        yield repr((array.shape, array.dtype.str)).encode() + array.tobytes()


def cache_key(net: FrozenNetwork, compiler: str) -> str:
    """Hash of the network, the template, this module and simplify.py, the compiler binary, FLAGS and the CPU."""
    digest = hashlib.sha256()
    for part in _network_bytes(net):
        digest.update(part)
    real = os.path.realpath(compiler)
    info = os.stat(real)
    here = Path(__file__)
    for text in (template.path(TEMPLATE).read_bytes(), here.read_bytes(), here.with_name("simplify.py").read_bytes(),
                 f"{real} {info.st_size} {info.st_mtime_ns} {' '.join(FLAGS)} {_machine()}".encode()):
        digest.update(hashlib.sha256(text).digest())
    return digest.hexdigest()[:32]


_KEYS: dict = {}  # id(net) -> (weak reference, compiler, flags, key): a network is hashed once


def _key(net: FrozenNetwork, compiler: str) -> str:
    """cache_key, remembered per network object (so build a new FrozenNetwork, do not edit one)."""
    entry = _KEYS.get(id(net))
    if entry is None or entry[0]() is not net or entry[1:3] != (compiler, FLAGS):
        entry = (weakref.ref(net), compiler, FLAGS, cache_key(net, compiler))
        _KEYS[id(net)] = entry
    return entry[3]


class _Unusable(Exception):
    """A folder that cannot hold or load the engine; the message says why, in a few words."""


def _compile(text: str, compiler: str, target: Path) -> None:
    """Build `text` into the shared library `target` (written under a temporary name, then renamed,
    so that concurrent processes never load half a file). Raises RunError with the compiler's words,
    _Unusable when target's folder cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            src, lib = Path(tmp) / "dwn_engine.c", Path(tmp) / "engine.so"
            src.write_text(text)
            for flags in (FLAGS, PORTABLE_FLAGS):  # not every compiler knows -march=native
                try:
                    result = subprocess.run([compiler, *flags, "-o", str(lib), str(src)], capture_output=True,
                                            text=True)
                except OSError as exc:
                    raise RunError(f"{compiler} does not run ({exc})") from exc
                if result.returncode == 0:
                    os.replace(src, target.with_suffix(".c"))  # kept beside the library, for reading
                    os.replace(lib, target)
                    return
    except OSError as exc:
        raise _Unusable(f"{os_reason(exc)}: {exc.filename or target.parent}") from exc
    first = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip()[:200])
    raise RunError(f"{compiler} could not build the compiled engine ({first})")


def _load(net: FrozenNetwork, key: str, compiler: str, folder: Path):
    """The engine as <folder>/<key>.so, built there first when absent. Raises _Unusable when the
    folder cannot be written or its library does not load, RunError when the build fails."""
    path = folder / f"{key}.so"
    try:
        present = path.is_file()
    except OSError as exc:
        raise _Unusable(f"{os_reason(exc)}: {path}") from exc
    if not present:
        _compile(source(net, key), compiler, path)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise _Unusable(f"{path} does not load: {os_reason(exc)}; delete it to rebuild") from exc
    lib.dwn_key.restype = ctypes.c_char_p
    if lib.dwn_key().decode() != key:
        raise _Unusable(f"{path} was built for another network; delete it to rebuild")
    lib.dwn_run.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int]
    lib.dwn_run.restype = ctypes.c_int
    return lib


def _temporary_folder() -> Path:
    """This process's private folder (mode 0700, removed at exit) for when the cache cannot be used;
    _Unusable when none can be made."""
    if "folder" not in _TEMPORARY:
        try:
            folder = tempfile.mkdtemp(prefix="dwn-engine-")
        except OSError as exc:
            raise _Unusable(f"{os_reason(exc)}: {exc.filename or tempfile.gettempdir()}") from exc
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _TEMPORARY["folder"] = Path(folder)
    return _TEMPORARY["folder"]


def _cached_or_temporary(net: FrozenNetwork, key: str, compiler: str):
    """The engine from the cache folder, else (after one warning naming DWN_CACHE_DIR) from a
    temporary folder; RunError when neither can hold it or the build fails."""
    folder = cache_dir()
    try:
        return _load(net, key, compiler, folder)
    except _Unusable as exc:
        problem = str(exc)
    try:
        lib = _load(net, key, compiler, _temporary_folder())
    except _Unusable as exc:
        raise RunError(f"the compiled engine can be built in neither its cache folder {folder} ({problem}) nor a "
                       f"temporary folder ({exc}); set DWN_CACHE_DIR to a writable folder") from None
    _warn_once(f"The compiled engine's cache folder {folder} cannot be used ({problem}), so it was built in a "
               "temporary folder that this process removes at exit; set DWN_CACHE_DIR to a writable folder to "
               "keep it between runs.")
    return lib


def library(net: FrozenNetwork, compiler: str | None = None):
    """The network's engine as a loaded ctypes library: from this process's memo, the disk cache
    (or a temporary folder when the cache cannot be used), or built now. Raises RunError when no
    compiler is found, the build fails or no folder can hold it; DWNError when $CC names no program."""
    compiler = compiler or find_compiler()
    if compiler is None:
        raise RunError("no C compiler was found (looked for cc, gcc and clang; set CC to use another)")
    key = _key(net, compiler)
    if key in _FAILED:  # a build that failed is not retried in this process
        raise _FAILED[key]
    if key not in _LIBRARIES:
        try:
            _LIBRARIES[key] = _cached_or_temporary(net, key, compiler)
        except RunError as exc:
            _FAILED[key] = exc
            raise
    return _LIBRARIES[key]


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


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        console.log.warning(message)


def _run(net: FrozenNetwork, x: np.ndarray, real: bool, threads: int | None, scores: bool):
    """The engine on prepared rows, or None (after one warning) when it cannot be built here."""
    if not len(x):
        return np.zeros(0, dtype=np.int64), np.zeros((0, net.num_classes), dtype=np.int64) if scores else None
    try:
        lib = library(net)
    except RunError as exc:
        _warn_once(f"The packed engine runs in numpy, much slower, because {str(exc).rstrip('.')}.")
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
    """Real features x (S, F) -> as predict, quantised by the contract (round half to even,
    saturate); float32 input is quantised inside the engine, in parallel."""
    x = _rows(net, x)
    if x.dtype == np.float32:
        done = _run(net, np.ascontiguousarray(x), True, threads, scores)
        if done is not None:
            return done
    return predict(net, net.input.quantise(x), threads, scores)
