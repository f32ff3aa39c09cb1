"""The LUT operation in torch: the CPU backend (it also runs on any torch device).

Contract, data layout and the backend signature: dwn_train/lut.py. Its twin on the CUDA kernels
is dwn_train/cuda_lut.py.

Computing the derivative table D. Every EFD weight is a sum of terms c * t**H (lut.EFD). For one
term, t**H is a product over the bits m != l of (1 if a_m == k_m else t), so the sum over k
factorises: view a table as an n-dimensional 2x...x2 cube, apply [[1, t], [t, 1]] along every
bit m != l and (v0, v1) -> (v1 - v0, v1 - v0) along bit l. That is O(n^2 2^n) per LUT instead of
O(4^n). D is linear in the table, so for small n the same transform applied to the identity
gives a (2^n, 2^n * n) matrix and D is one matmul.

The per-sample work is then a gather of D[j, :, addr(i, j)] and a scatter-add into dx:
O(B * N * n) instead of the naive O(B * N * n * 2^n).

Determinism. On a CUDA device torch's index_add_ sums with float atomics, so the table and input
gradients can differ in their last bits from run to run; with spec.deterministic both scatters run
under torch's deterministic algorithms, which make index_add_ on CUDA deterministic (documented in
torch.use_deterministic_algorithms); on the CPU it already is.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import torch

# Up to this table size D is computed as one matmul with a cached matrix; above it, factorised.
_MATRIX_MAX_ENTRIES = 256


def _factorised_table(tables: torch.Tensor, terms) -> torch.Tensor:
    """D for each row of `tables` (R, 2**n) by per-bit 2x2 transforms; returns (R, n, 2**n)."""
    rows, size = tables.shape
    n = size.bit_length() - 1
    # one copy of the table per derivative bit l, as a cube whose last axis is bit 0
    cube_shape = (rows, n) + (2,) * n
    total = torch.zeros(cube_shape, dtype=tables.dtype, device=tables.device)
    for c, t in terms:
        cube = tables.reshape(rows, 1, *(2,) * n).expand(cube_shape)
        for m in range(n):
            axis = 2 + (n - 1 - m)
            v0, v1 = cube.select(axis, 0), cube.select(axis, 1)
            is_l = torch.zeros((1, n) + (1,) * (n - 1), dtype=torch.bool, device=tables.device)
            is_l[0, m] = True
            diff = v1 - v0
            new0 = torch.where(is_l, diff, v0 + t * v1)
            new1 = torch.where(is_l, diff, t * v0 + v1)
            cube = torch.stack((new0, new1), dim=axis)
        total += c * cube
    return total.reshape(rows, n, size)


@lru_cache(maxsize=64)
def _efd_matrix(n: int, terms, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The linear map table -> D as a (2**n, n * 2**n) matrix, built in float64 once per key."""
    eye = torch.eye(2**n, dtype=torch.float64)
    return _factorised_table(eye, terms).reshape(2**n, n * 2**n).to(dtype=dtype, device=device)


def derivative_table(luts: torch.Tensor, terms) -> torch.Tensor:
    """D[j, a, l] (see dwn_train/lut.py) for luts (N, 2**n), stored bit-major: (N, n, 2**n)."""
    num, size = luts.shape
    n = size.bit_length() - 1
    if size <= _MATRIX_MAX_ENTRIES:
        matrix = _efd_matrix(n, tuple(terms), luts.dtype, str(luts.device))
        return (luts @ matrix).view(num, n, size)
    return _factorised_table(luts, terms)


def lut_addresses(x: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """Addresses of every LUT for every sample, LUT-major: (N, B).

    x: (B, I) real; mapping: (N, n) int64 indices into I. The dtype is the smallest that holds
    2**n - 1 (uint8 for n <= 8, else int32). Works LUT-major because gathering whole rows of the
    transposed bits is an order of magnitude faster on the CPU than gathering columns.
    """
    n = mapping.shape[1]
    dtype = torch.uint8 if n <= 8 else torch.int32
    bits = (x.t() > 0).contiguous().to(dtype)  # (I, B)
    addr = bits.index_select(0, mapping[:, 0])
    for l in range(1, n):
        addr += bits.index_select(0, mapping[:, l]) << l
    return addr


def _flat_index(addr: torch.Tensor, size: int) -> torch.Tensor:
    """(N, B) addresses -> int64 indices into luts.view(-1)."""
    offsets = torch.arange(addr.shape[0], device=addr.device, dtype=torch.int64) * size
    return addr.to(torch.int64) + offsets.unsqueeze(1)


def forward(x, luts, mapping, spec):
    """(out (B, N), saved (luts, addr (N, B))); see the backend signature in dwn_train/lut.py."""
    size = luts.shape[1]
    addr = lut_addresses(x, mapping)
    values = luts.reshape(-1).take(_flat_index(addr, size))  # (N, B)
    out = (values > 0).to(values.dtype) if spec.ste else values
    return out.t(), (luts, addr)


def backward(saved, grad, spec, needs):
    """(grad_luts (N, 2**n) or None, grad_wires (N, n, B) or None) for grad (B, N);
    needs = (luts, wires)."""
    luts, addr = saved
    num, size = luts.shape
    flat = _flat_index(addr, size)
    grad_t = grad.t().contiguous()  # (N, B)
    grad_luts = grad_wires = None
    if needs[0]:
        grad_luts = torch.zeros(luts.numel(), dtype=grad.dtype, device=grad.device)
        with _deterministic(spec.deterministic):
            grad_luts = grad_luts.index_add_(0, flat.view(-1), grad_t.view(-1)).view_as(luts)
    if needs[1]:
        table = derivative_table(luts.detach(), spec.terms).transpose(0, 1)  # (n, N, 2^n)
        n = table.shape[0]
        table = table.reshape(n, num * size)
        rows = table.gather(1, flat.view(1, -1).expand(n, -1)).view(n, *flat.shape)  # (n, N, B)
        grad_wires = rows.mul_(grad_t).transpose(0, 1)  # (N, n, B) view: rows stay bit-major
    return grad_luts, grad_wires


def inverse_mapping(mapping, inputs: int):
    """The torch scatter needs no inverse mapping."""
    return None


def scatter_wires(grad_wires, mapping, inverse, inputs: int, spec):
    """(B, I) input gradient: every wire's gradient added to the input it reads."""
    num, n, batch = grad_wires.shape
    rows = grad_wires.transpose(0, 1).reshape(n * num, batch)  # free for backward()'s layout
    grad_x = torch.zeros(inputs, batch, dtype=grad_wires.dtype, device=grad_wires.device)
    with _deterministic(spec.deterministic):
        grad_x.index_add_(0, mapping.t().reshape(-1), rows)
    return grad_x.t()


@contextmanager
def _deterministic(wanted: bool):
    """torch's deterministic algorithms for the block when `wanted` (and not already on); the
    caller's setting, warn_only included, is restored after it."""
    if not wanted or torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False, warn_only=warn_only)
