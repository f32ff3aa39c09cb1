"""CUDA kernels (kernels/*.cu) compiled at run time as CuPy RawModules and launched on torch's
current stream of the tensors' device. CuPy is imported lazily: CPU-only installs never import it.

    source("lut")  -> the text NVRTC compiles: kernels/lut.cu with its local #includes inlined
                      (with #line directives, so errors name the real file and line, and CuPy's
                      cache key, a hash of this text, changes when a header changes)
    launch("lut", "lut_forward_f32", grid, args, shared=0)
                   -> run one kernel: args are torch tensors (passed as device pointers) and numpy
                      scalars (np.int32, np.float32) in the order of the kernel's parameters

`launch` is the one place that touches CuPy at run time; the tests replace it by a host launcher
that runs the same .cu on the CPU (tests/kernel_host.py).
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache

import numpy as np
import torch

from .errors import DWNError, first_line
from .resources import kernels_dir

THREADS = 256
# the largest n the kernels take: the table-gradient histograms live in shared memory (2^n floats)
MAX_KERNEL_N = 12
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def source(name: str) -> str:
    """kernels/<name>.cu with its `#include "local.cuh"` lines replaced by the files' text."""
    return _expand(kernels_dir() / f"{name}.cu", set())


def _expand(path, seen: set) -> str:
    lines = [f'#line 1 "{path}"']
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = _INCLUDE.match(line)
        included = path.parent / match.group(1) if match else None
        if included is None or not included.is_file():
            lines.append(line)
            continue
        if included not in seen:  # every header here is `#pragma once`
            seen.add(included)
            lines.append(_expand(included, seen))
        lines.append(f'#line {number + 1} "{path}"')
    return "\n".join(lines) + "\n"


def compile_options(arch: str | None = None) -> tuple[str, ...]:
    options = ("-std=c++17",)
    return options + ((f"--gpu-architecture={arch}",) if arch else ())


_CUPY_ERROR: list = []  # the import failure, remembered so that it is not retried on every call


def _cupy():
    if _CUPY_ERROR:
        raise _CUPY_ERROR[0]
    try:
        import cupy
    except ImportError as exc:
        error = DWNError("The CUDA backend needs CuPy: pip install 'dwn-train[cuda]'.")
        error.__cause__ = exc
        _CUPY_ERROR.append(error)
        raise error from exc
    return cupy


def available(device: torch.device | None = None) -> bool:
    """True when CUDA tensors exist here and CuPy imports; with a device, also that the kernels
    compile and load there (checked once per device: a CuPy built for another CUDA, or an NVRTC
    failure, then means the torch implementation instead of a traceback at the first launch)."""
    if not torch.cuda.is_available():
        return False
    try:
        _cupy()
    except DWNError:
        return False
    if device is None:
        return True
    return _loads(device.index if device.index is not None else torch.cuda.current_device())


@lru_cache(maxsize=None)
def _loads(device: int) -> bool:
    try:
        _module("lut", device)
    except Exception as exc:  # CuPy's compile and driver errors have no common base class
        warnings.warn(f"the CUDA kernels could not be loaded on cuda:{device} ({first_line(exc)}); using the torch "
                      "implementation.")
        return False
    return True


@lru_cache(maxsize=None)
def _function(module: str, kernel: str, device: int):
    """The compiled kernel for one device as CuPy's low-level Function, memoised: it launches on
    the stream it is given, so no CuPy stream context is entered per launch (on an H200, 15-16 us
    of host time per launch this way against 23-24 us through RawKernel inside one)."""
    with _cupy().cuda.Device(device):
        return _module(module, device).get_function(kernel).kernel


@lru_cache(maxsize=None)
def _module(name: str, device: int):
    cupy = _cupy()
    with cupy.cuda.Device(device):
        module = cupy.RawModule(code=source(name), options=compile_options())
        module.compile()
    return module


_STREAMS: dict = {}  # (torch stream handle, device) -> CuPy's view of that stream


def _cupy_stream(current: torch.cuda.Stream, device: int):
    """torch's stream `current` as a CuPy stream (no copy, no synchronisation), made once per stream
    (the handle alone is not unique: every device's default stream is 0)."""
    key = (current.cuda_stream, device)
    stream = _STREAMS.get(key)
    if stream is None:
        if len(_STREAMS) >= 256:  # streams come from torch's fixed pools; bound it all the same
            _STREAMS.clear()
        cupy = _cupy()
        if hasattr(cupy.cuda.Stream, "from_external"):  # CuPy >= 14
            stream = cupy.cuda.Stream.from_external(current)
        else:
            stream = cupy.cuda.ExternalStream(current.cuda_stream, device)
        _STREAMS[key] = stream
    return stream


def _device(args) -> torch.device:
    devices = {a.device for a in args if isinstance(a, torch.Tensor)}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        raise DWNError(f"a kernel launch needs tensors on one CUDA device; got {sorted(map(str, devices))}.")
    return next(iter(devices))


def launch(module: str, kernel: str, grid: tuple, args: tuple, shared: int = 0, threads: int = THREADS) -> None:
    """Run `kernel` of kernels/<module>.cu with `grid` blocks of `threads` threads on the tensors'
    device and its current torch stream; tensors are passed as device pointers. At small batches a
    step is a few dozen launches, so this path is kept short: the kernel and the stream are looked
    up once, and the device is switched only when another one is current."""
    device = _device(args).index
    values = tuple(np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else a for a in args)
    function = _function(module, kernel, device)
    stream = _cupy_stream(torch.cuda.current_stream(device), device)
    if torch.cuda.current_device() == device:
        function(tuple(grid), (threads,), values, shared_mem=shared, stream=stream)
    else:
        with torch.cuda.device(device):
            function(tuple(grid), (threads,), values, shared_mem=shared, stream=stream)


def blocks(elements: int, threads: int = THREADS) -> tuple:
    """A 1-D grid with one thread per element."""
    return ((elements + threads - 1) // threads,)
