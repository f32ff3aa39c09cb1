"""The LUT operation on the CUDA kernels (kernels/lut.cu): the GPU backend.

Contract, data layout and the backend signature: dwn_train/lut.py. Its twin in torch is
dwn_train/torch_lut.py (the reference; it also runs on CUDA tensors). This module only shapes
tensors and launches kernels; `kernels.launch` is the one call that reaches the GPU.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from . import kernels

i32, f32 = np.int32, np.float32
# samples per block of the table-gradient histogram (several blocks add into one table)
CHUNK = 4096


def forward(x, luts, mapping, spec):
    """(out (B, N), saved (luts, addr (N, B) uint16)); see the backend signature in dwn_train/lut.py."""
    batch, inputs = x.shape
    num, size = luts.shape
    out = torch.empty(num, batch, device=x.device, dtype=torch.float32)
    addr = torch.empty(num, batch, device=x.device, dtype=torch.int16)  # read as unsigned short
    if batch:
        x_t = x.t().contiguous()  # free when x is the previous layer's output
        kernels.launch("lut", "lut_forward_f32", kernels.blocks(batch * num),
                       (x_t, mapping.contiguous(), luts.contiguous(), out, addr,
                        i32(batch), i32(inputs), i32(num), i32(spec.n), i32(spec.ste)))
    return out.t(), (luts, addr)


def backward(saved, grad, spec, needs):
    """(grad_luts (N, 2**n) or None, grad_wires (N, n, B) or None) for grad (B, N);
    needs = (luts, wires)."""
    luts, addr = saved
    num, batch = addr.shape
    grad_t = grad.t().contiguous()  # (N, B); free when grad came from the next LUT layer
    grad_luts = _table_gradient(grad_t, addr, spec) if needs[0] else None
    grad_wires = None
    if needs[1]:
        table = derivative_table(luts.detach(), spec)
        grad_wires = torch.empty(num, spec.n, batch, device=grad.device, dtype=torch.float32)
        if batch:
            kernels.launch("lut", "lut_backward_wires_f32", kernels.blocks(batch * num),
                           (grad_t, addr, table, grad_wires, i32(batch), i32(num), i32(spec.n)))
    return grad_luts, grad_wires


def derivative_table(luts, spec):
    """D (N, n, 2**n), as dwn_train.torch_lut.derivative_table, from the same spec.terms."""
    num, size = luts.shape
    table = torch.empty(num, spec.n, size, device=luts.device, dtype=torch.float32)
    terms = _terms_tensor(spec.terms, luts.device)
    kernels.launch("lut", "efd_table_f32", (num,), (luts.contiguous(), terms, table, i32(num), i32(spec.n),
                                                    i32(len(spec.terms))), shared=8 * size)
    return table


@lru_cache(maxsize=64)
def _terms_tensor(terms, device) -> torch.Tensor:
    """The EFD terms as a (T, 2) float32 tensor on the device, made once (before any graph capture)."""
    return torch.tensor(terms, dtype=torch.float32, device=device)


def _table_gradient(grad_t, addr, spec):
    num, batch = addr.shape
    size = 1 << spec.n
    grad_luts = torch.zeros(num, size, device=grad_t.device, dtype=torch.float32)
    if not batch:
        return grad_luts
    if spec.deterministic:
        threads = kernels.THREADS
        shared = 4 * max(size, threads) + 4 * threads + 2 * threads
        kernels.launch("lut", "lut_backward_luts_det_f32", (num,),
                       (grad_t, addr, grad_luts, i32(batch), i32(num), i32(spec.n)), shared=shared)
    else:
        kernels.launch("lut", "lut_backward_luts_f32", (num, (batch + CHUNK - 1) // CHUNK),
                       (grad_t, addr, grad_luts, i32(batch), i32(num), i32(spec.n), i32(CHUNK)), shared=4 * size)
    return grad_luts


def inverse_mapping(mapping, inputs: int):
    """CSR of the wires that read each input: (offsets (I+1), order (W)) int64, wires ascending.
    bincount synchronises: the layer computes this once per wiring (LUTLayer._inverse)."""
    flat = mapping.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=inputs)
    offsets = torch.zeros(inputs + 1, dtype=torch.int64, device=mapping.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return offsets, order


def scatter_wires(grad_wires, mapping, inverse, inputs: int, spec):
    """(B, I) input gradient: a fixed-order sum, per input, of the wires that read it (deterministic
    whatever spec says)."""
    num, n, batch = grad_wires.shape
    offsets, order = inverse
    grad_x = torch.empty(inputs, batch, device=grad_wires.device, dtype=torch.float32)
    if batch:
        kernels.launch("lut", "gather_wires_f32", kernels.blocks(batch * inputs),
                       (grad_wires.contiguous(), offsets, order, grad_x, i32(batch), i32(inputs)))
    return grad_x.t()
