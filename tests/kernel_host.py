"""Run the CUDA kernels (kernels/*.cu) on the CPU, through the project's own launch code.

`kernels.source(module)`, the text NVRTC compiles, is compiled by g++ with tests/harness/cuda_host.h
(the CUDA built-ins for the host: one host thread per CUDA thread, a real __syncthreads, a real
atomicAdd) and glue generated here from the kernels' signatures, then loaded with ctypes.
`HostKernels.launch` has the interface of `dwn_train.kernels.launch`; the fixture `host_launch`
puts it in that function's place, so dwn_train.cuda_lut runs unchanged on CPU tensors.

Every launch is checked against the parsed signature first (AssertionError naming the kernel and
parameter): argument count, tensor dtype / device / contiguity for pointers, numpy scalar type for
values, grid and block sizes, shared memory within the 48 KiB a launch gets without opting in.
Tensors are passed as copies framed by guard elements, so a write out of bounds fails. Float
guards are signalling NaNs (a read out of bounds turns into NaN, and an add into a guard changes
its bits); integer guards are 0, so that a stray index read stays in bounds. The shim checks the
block's shared memory the same way (a too-small `shared=` fails).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from dwn_train import kernels

SHIM = Path(__file__).parent / "harness" / "cuda_host.h"
COMPILE = ["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread", "-Wall", "-Werror"]
MAX_SHARED = 48 * 1024  # dynamic shared memory a launch gets without cudaFuncSetAttribute
GUARD = 64  # elements framing each tensor argument
# the guard element's bits: signalling NaNs for floats (as integers of the same width), 0 otherwise
GUARD_BITS = {torch.float32: (torch.int32, 0x7FA5A5A5), torch.float64: (torch.int64, 0x7FF4A5A5A5A5A5A5)}

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
# C type of a pointer parameter -> the torch dtypes that may back it
TENSOR_TYPES = {
    "float": (torch.float32,),
    "double": (torch.float64,),
    "int": (torch.int32,),
    "long long": (torch.int64,),
    "unsigned short": (torch.int16, torch.uint16),  # int16 storage read as unsigned short
    "unsigned char": (torch.uint8,),
}
# C type of a value parameter -> (numpy type expected, ctypes type passed)
SCALAR_TYPES = {
    "int": (np.int32, ctypes.c_int32),
    "unsigned int": (np.uint32, ctypes.c_uint32),
    "long long": (np.int64, ctypes.c_int64),
    "float": (np.float32, ctypes.c_float),
}


@dataclass(frozen=True)
class Param:
    ctype: str  # the type as written, e.g. "const float*"
    name: str
    base: str  # without const and *, e.g. "float"
    pointer: bool


def _param(text: str) -> Param:
    declaration = " ".join(text.split())
    match = re.fullmatch(r"(.*?)\s*\b(\w+)", declaration)
    assert match, f"cannot parse the kernel parameter {declaration!r}"
    ctype = match.group(1)
    base = " ".join(w for w in ctype.replace("*", " ").split() if w not in ("const", "__restrict__"))
    return Param(ctype, match.group(2), base, "*" in ctype)


def parse_kernels(text: str) -> dict[str, tuple[Param, ...]]:
    """Every `extern "C" __global__ void name(params)` in a kernel source: name -> parameters."""
    found = {}
    for match in _SIGNATURE.finditer(_COMMENT.sub("", text)):
        found[match.group(1)] = tuple(_param(p) for p in match.group(2).split(",") if p.strip())
    return found


def glue(signatures: dict[str, tuple[Param, ...]]) -> str:
    """C++: one wrapper per kernel unpacking a void** argument array (each entry points at the
    argument's value, as cuLaunchKernel's kernelParams) and `dwn_host_launch`, which runs a grid."""
    lines = ['#line 1 "kernel_host_glue.cpp"']
    for name, params in signatures.items():
        call = ", ".join(f"*static_cast<{p.ctype}*>(args[{k}])" for k, p in enumerate(params))
        lines.append(f"static void call_{name}(void** args) {{ {name}({call}); }}")
    lines += ['extern "C" int dwn_host_launch(const char* kernel, unsigned int grid_x, unsigned int grid_y,',
              "                               unsigned int threads, unsigned long long shared, void** args,",
              "                               char* message, int size)",
              "{"]
    for name in signatures:
        lines.append(f'    if (std::strcmp(kernel, "{name}") == 0) {{\n'
                     f"        return dwn_host::run_grid(call_{name}, args, grid_x, grid_y, threads, shared,\n"
                     "                                  message, size);\n"
                     "    }")
    lines += ['    std::snprintf(message, size, "no kernel %s", kernel);', "    return 1;", "}", ""]
    return "\n".join(lines)


class HostKernels:
    """The kernels of each kernels/<module>.cu built for the host (once, on first use) in `directory`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._modules: dict[str, tuple[ctypes.CDLL, dict]] = {}

    def module(self, name: str) -> tuple[ctypes.CDLL, dict[str, tuple[Param, ...]]]:
        if name not in self._modules:
            self._modules[name] = self._build(name)
        return self._modules[name]

    def _build(self, name: str):
        text = kernels.source(name)
        signatures = parse_kernels(text)
        assert signatures, f"kernels/{name}.cu has no extern \"C\" __global__ entry point"
        included = self.directory / f"{name}.cu.inc"  # included, so `#pragma once` is not in the main file
        included.write_text(text)
        main = self.directory / f"{name}_host.cpp"
        main.write_text(f'#include "{SHIM}"\n#include "{included}"\n{glue(signatures)}')
        library = self.directory / f"lib{name}_host.so"
        result = subprocess.run([*COMPILE, "-o", str(library), str(main)], capture_output=True, text=True)
        if result.returncode:
            pytest.fail(f"g++ cannot compile kernels/{name}.cu for the host:\n{result.stderr}", pytrace=False)
        lib = ctypes.CDLL(str(library))
        lib.dwn_host_launch.restype = ctypes.c_int
        lib.dwn_host_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                        ctypes.c_ulonglong, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p,
                                        ctypes.c_int]
        return lib, signatures

    def launch(self, module: str, kernel: str, grid: tuple, args: tuple, shared: int = 0,
               threads: int = kernels.THREADS) -> None:
        """dwn_train.kernels.launch, on the CPU: checks the launch, then runs the grid."""
        lib, signatures = self.module(module)
        assert kernel in signatures, f"kernels/{module}.cu has no kernel {kernel!r}; it has {sorted(signatures)}"
        params = signatures[kernel]
        check_launch(kernel, params, grid, args, shared, threads)
        framed = [_Framed(a, p, kernel) if p.pointer else a for p, a in zip(params, args)]
        values = [ctypes.c_void_p(f.pointer) if p.pointer else SCALAR_TYPES[p.base][1](f.item())
                  for p, f in zip(params, framed)]
        pointers = (ctypes.c_void_p * max(1, len(values)))(*(ctypes.addressof(v) for v in values))
        grid = tuple(int(g) for g in grid) + (1,)
        message = ctypes.create_string_buffer(512)
        status = lib.dwn_host_launch(kernel.encode(), grid[0], grid[1], threads, shared, pointers, message,
                                     len(message))
        assert status == 0, f"{kernel}: {message.value.decode()}"
        for f in framed:
            if isinstance(f, _Framed):
                f.finish()


def check_launch(kernel: str, params, grid, args, shared, threads) -> None:
    """AssertionError with a precise message unless the launch fits the kernel's signature."""
    assert isinstance(args, tuple), f"{kernel}: args must be a tuple; got {type(args).__name__}"
    assert len(args) == len(params), (f"{kernel} takes {len(params)} arguments "
                                      f"({', '.join(p.name for p in params)}); got {len(args)}")
    for position, (param, value) in enumerate(zip(params, args)):
        where = f"{kernel} argument {position} ({param.ctype} {param.name})"
        if param.pointer:
            assert isinstance(value, torch.Tensor), f"{where}: expected a tensor; got {type(value).__name__}"
            allowed = TENSOR_TYPES.get(param.base)
            assert allowed, f"{where}: no tensor dtype known for {param.base!r}"
            assert value.dtype in allowed, \
                f"{where}: expected dtype {' or '.join(map(str, allowed))}; got {value.dtype}"
            assert value.device.type == "cpu", f"{where}: the host kernels take CPU tensors; got {value.device}"
            assert value.is_contiguous(), \
                f"{where}: not contiguous (shape {tuple(value.shape)}, stride {value.stride()})"
        else:
            expected = SCALAR_TYPES.get(param.base)
            assert expected, f"{where}: no scalar type known for {param.base!r}"
            assert type(value) is expected[0], f"{where}: expected {expected[0].__name__}; got {type(value).__name__}"
    for position, (param, out) in enumerate(zip(params, args)):  # each argument is copied: no aliasing
        if param.pointer and "const" not in param.ctype and out.numel():
            for other_position, other in enumerate(args):
                if other_position != position and isinstance(other, torch.Tensor) and other.numel():
                    assert other.untyped_storage().data_ptr() != out.untyped_storage().data_ptr(), \
                        f"{kernel}: argument {position} ({param.name}) shares memory with argument {other_position}"
    grid = tuple(grid)
    assert 1 <= len(grid) <= 2, f"{kernel}: grid must have 1 or 2 dimensions; got {grid}"
    assert all(isinstance(g, (int, np.integer)) and g > 0 for g in grid), \
        f"{kernel}: grid dims must be positive; got {grid}"
    assert grid[0] < 2**31 and (len(grid) == 1 or grid[1] < 2**16), f"{kernel}: grid {grid} exceeds CUDA's limits"
    assert isinstance(threads, int) and 1 <= threads <= 1024, f"{kernel}: threads must be in 1..1024; got {threads}"
    assert isinstance(shared, int) and 0 <= shared <= MAX_SHARED, \
        f"{kernel}: shared memory must be in 0..{MAX_SHARED} bytes; got {shared}"


class _Framed:
    """A copy of a tensor argument between guard elements; `finish` checks the guards and copies a
    written argument back (a const one must be unchanged)."""

    def __init__(self, tensor: torch.Tensor, param: Param, kernel: str):
        self.tensor, self.param, self.kernel = tensor, param, kernel
        self.buffer = _guards(tensor.numel() + 2 * GUARD, tensor.dtype)
        self.buffer[GUARD:GUARD + tensor.numel()] = tensor.reshape(-1)
        self.pointer = self.buffer[GUARD:].data_ptr()

    def finish(self) -> None:
        where = f"{self.kernel}: {self.param.ctype} {self.param.name}"
        size = self.tensor.numel()
        guard = _guards(GUARD, self.tensor.dtype).view(torch.uint8)
        for side, part in (("before", self.buffer[:GUARD]), ("past the end of", self.buffer[GUARD + size:])):
            assert torch.equal(part.view(torch.uint8), guard), \
                f"{where}: the kernel wrote {side} the tensor of {size} elements"
        data = self.buffer[GUARD:GUARD + size]
        if "const" in self.param.ctype:
            assert torch.equal(data.view(torch.uint8), self.tensor.reshape(-1).view(torch.uint8)), \
                f"{where}: the kernel changed a const argument"
        else:
            self.tensor.view(-1).copy_(data)


def _guards(count: int, dtype: torch.dtype) -> torch.Tensor:
    if dtype in GUARD_BITS:
        bits, value = GUARD_BITS[dtype]
        return torch.full((count,), value, dtype=bits).view(dtype)
    return torch.zeros(count, dtype=dtype)


@pytest.fixture(scope="session")
def host_kernels(tmp_path_factory) -> HostKernels:
    """The kernels built for the host once per session (skips without g++)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    return HostKernels(tmp_path_factory.mktemp("kernel_host"))


@pytest.fixture
def host_launch(host_kernels, monkeypatch):
    """dwn_train.kernels.launch replaced by the host launcher for one test; yields the launcher."""
    monkeypatch.setattr(kernels, "launch", host_kernels.launch)
    return host_kernels.launch
