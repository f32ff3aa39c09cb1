"""The LUT layer's forward and EFD backward on the CUDA kernels (kernels/lut.cu).

Same contract as the torch implementation in dwn_train/lut.py (which remains the reference and
also runs on CUDA tensors); this module only marshals tensors and launches kernels.
"""

from __future__ import annotations

import numpy as np
import torch

from . import kernels

VARIANTS = {"exponential": 0, "paper": 1, "fd": 2}


def _i32(value: int) -> np.int32:
    return np.int32(value)


def forward(x, luts, mapping, ste: bool):
    """(out (B, N), addr (B, N) uint16) for x (B, I), luts (N, 2^n), mapping (N, n) int64."""
    x, mapping = x.contiguous(), mapping.contiguous()
    batch, inputs = x.shape
    num, size = luts.shape
    n = size.bit_length() - 1
    out = torch.empty(batch, num, device=x.device, dtype=torch.float32)
    addr = torch.empty(batch, num, device=x.device, dtype=torch.int16)  # read as unsigned short
    mod = kernels.module("lut")
    kernels.launch(mod, "lut_forward_f32", batch * num, (x, mapping, luts.contiguous(), out, addr, _i32(batch),
                                                          _i32(inputs), _i32(num), _i32(n), _i32(int(ste))))
    return out, addr


def derivative_table(luts, efd: str, alpha: float, beta: float):
    """D (N, n, 2^n), as dwn_train.lut.derivative_table."""
    num, size = luts.shape
    n = size.bit_length() - 1
    table = torch.empty(num, n, size, device=luts.device, dtype=torch.float32)
    kernels.launch(kernels.module("lut"), "efd_table_f32", num * n * size,
                   (luts.contiguous(), table, _i32(num), _i32(n), _i32(VARIANTS[efd]), np.float32(alpha),
                    np.float32(beta)))
    return table


def wire_gradients(grad, addr, table):
    """(B, N * n): g[i, j] * D[j, l, addr[i, j]] at column j*n + l."""
    batch, num = grad.shape
    n = table.shape[1]
    wires = torch.empty(batch, num * n, device=grad.device, dtype=torch.float32)
    kernels.launch(kernels.module("lut"), "lut_backward_wires_f32", batch * num,
                   (grad.contiguous(), addr, table, wires, _i32(batch), _i32(num), _i32(n)))
    return wires


def inverse_mapping(layer, mapping, inputs: int):
    """CSR of the wires that read each input: (offsets (I+1), order (W)) int64, wires ascending.

    Cached on the layer until its mapping changes (bincount synchronises, which a CUDA graph
    capture forbids, so it must not run on every step)."""
    key = (mapping.data_ptr(), mapping._version, inputs)
    cached = getattr(layer, "_inverse_mapping", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    flat = mapping.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=inputs)
    offsets = torch.zeros(inputs + 1, dtype=torch.int64, device=mapping.device)
    offsets[1:] = torch.cumsum(counts, 0)
    layer._inverse_mapping = (key, (offsets, order))
    return offsets, order


def gather_wires(wires, offsets, order, inputs: int):
    """(B, I) input gradient from the wire gradients, summed in a fixed order."""
    batch, width = wires.shape
    grad_x = torch.empty(batch, inputs, device=wires.device, dtype=torch.float32)
    kernels.launch(kernels.module("lut"), "gather_wires_f32", batch * inputs,
                   (wires, offsets, order, grad_x, _i32(batch), _i32(inputs), _i32(width)))
    return grad_x


def lut_gradient(grad, addr, num: int, n: int, deterministic: bool, chunk: int = 4096):
    """(N, 2^n): sum of g over the samples that addressed each entry."""
    batch = grad.shape[0]
    size = 1 << n
    grad_luts = torch.zeros(num, size, device=grad.device, dtype=torch.float32)
    blocks = (num, 1) if deterministic else (num, (batch + chunk - 1) // chunk)
    kernels.launch(kernels.module("lut"), "lut_backward_luts_f32", 0,
                   (grad.contiguous(), addr, grad_luts, _i32(batch), _i32(num), _i32(n), _i32(chunk),
                    _i32(int(deterministic))), blocks=blocks, shared=4 * size)
    return grad_luts
