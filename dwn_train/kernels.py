"""CUDA kernels (kernels/*.cu) compiled at run time as CuPy RawModules and launched on torch's
current stream. CuPy is imported lazily: CPU-only installs never import it.

    module("lut")            -> a cupy.RawModule of kernels/lut.cu for the current device (memoised;
                                CuPy's own disk cache keeps the compiled binary between runs)
    launch(module, name, n, args, shared=0)   -> one thread per element, 256 per block
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .errors import DWNError
from .resources import kernels_dir

THREADS = 256
# the largest n the kernels take: the LUT-gradient histogram lives in shared memory (2^n floats)
MAX_KERNEL_N = 12


def source(name: str) -> str:
    """The kernel file's text with a #line directive, so compiler errors name the .cu file."""
    path = kernels_dir() / f"{name}.cu"
    return f'#line 1 "{path}"\n' + path.read_text()


def compile_options(arch: str | None = None) -> tuple[str, ...]:
    options = ("-std=c++17", f"--include-path={kernels_dir()}")
    return options + ((f"--gpu-architecture={arch}",) if arch else ())


@lru_cache(maxsize=None)
def _cupy():
    try:
        import cupy
    except ImportError as exc:
        raise DWNError("The CUDA backend needs CuPy: pip install 'dwn-train[cuda]'.") from exc
    return cupy


def available() -> bool:
    """True when CUDA tensors exist here and CuPy imports."""
    if not torch.cuda.is_available():
        return False
    try:
        _cupy()
    except DWNError:
        return False
    return True


@lru_cache(maxsize=None)
def _module(name: str, device: int):
    cupy = _cupy()
    with cupy.cuda.Device(device):
        module = cupy.RawModule(code=source(name), options=compile_options())
        module.compile()
    return module


def module(name: str):
    return _module(name, torch.cuda.current_device())


def launch(mod, kernel: str, elements: int, args: tuple, blocks=None, threads: int = THREADS, shared: int = 0):
    """Run `kernel` on torch's current stream; tensors in args are passed as device pointers."""
    cupy = _cupy()
    stream = cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    grid = blocks if blocks is not None else ((elements + threads - 1) // threads,)
    values = tuple(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args)
    with stream:
        mod.get_function(kernel)(grid, (threads,), values, shared_mem=shared)
