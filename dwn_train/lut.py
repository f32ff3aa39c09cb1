"""LUT lookup and its Extended Finite Difference (EFD) backward: the torch (CPU) implementation.

Conventions, written once here and followed by the kernels, the exporters and the tests:

Address. LUT j reads n inputs through ``mapping[j, 0..n-1]``. Bit l of its address for sample i
is ``x[i, mapping[j, l]] > 0``, least significant bit first::

    addr(i, j) = sum_l [x[i, mapping[j, l]] > 0] * 2**l

The layer outputs ``luts[j, addr(i, j)]`` (with the straight-through estimator: ``> 0`` as a
float, the gradient passing through unchanged).

EFD backward. With g = dLoss/d output, shape (B, N)::

    d luts[j, a]           = sum_i g[i, j] * [addr(i, j) == a]
    d x[i, mapping[j, l]] += g[i, j] * D[j, addr(i, j), l]
    D[j, a, l]             = sum_k luts[j, k] * w(H_l(a, k)) * (+1 if bit l of k else -1)
    H_l(a, k)              = popcount((a ^ k) & ~(1 << l))

with the weight w(H) = alpha * beta**H ('exponential', torch-dwn's), 1 / (H + 1) ('paper',
Bacellar et al. 2024, eq. 6) or [H == 0] ('fd', the plain finite difference of bit l).

Computing the derivative table D. Every w above is a sum of terms c * t**H: 'exponential' is
the single term (alpha, beta), 'fd' is (1, 0), and 'paper' uses 1/(H+1) = integral_0^1 t**H dt,
which Gauss-Legendre quadrature with ceil(n/2) nodes integrates exactly for H <= n - 1. For one
term, t**H is a product over the bits m != l of (1 if a_m == k_m else t), so the sum over k
factorises: view a table as an n-dimensional 2x...x2 cube, apply [[1, t], [t, 1]] along every
bit m != l and (v0, v1) -> (v1 - v0, v1 - v0) along bit l. That is O(n^2 2^n) per LUT instead of
O(4^n). D is linear in the table, so for small n the same transform applied to the identity
gives a (2^n, 2^n * n) matrix and D is one matmul.

The per-sample work is then a gather of D[j, addr(i, j), :] and a scatter-add into dx:
O(B * N * n) instead of the naive O(B * N * n * 2^n).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .errors import DWNError
from .mapping import mapping_backward

EFD_VARIANTS = ("exponential", "paper", "fd")
MAX_N = 16
# Up to this table size D is computed as one matmul with a cached matrix; above it, factorised.
_MATRIX_MAX_ENTRIES = 256


def efd_terms(variant: str, n: int, alpha: float, beta: float) -> tuple[tuple[float, float], ...]:
    """The EFD weight w(H) of `variant` as terms (c, t) with w(H) = sum c * t**H for H < n."""
    if variant == "exponential":
        return ((float(alpha), float(beta)),)
    if variant == "fd":
        return ((1.0, 0.0),)
    if variant == "paper":
        nodes, weights = np.polynomial.legendre.leggauss(max(1, (n + 1) // 2))
        # map [-1, 1] to [0, 1]
        return tuple((float(w) / 2.0, (float(x) + 1.0) / 2.0) for x, w in zip(nodes, weights))
    raise DWNError(f"efd must be one of {', '.join(EFD_VARIANTS)}; got {variant!r}.")


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
    """D[j, a, l] (see the module docstring) for luts (N, 2**n), stored bit-major: (N, n, 2**n)."""
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


class LUTFunction(torch.autograd.Function):
    """y[i, j] = luts[j, addr(i, j)] (binarised when ste), with the EFD backward.

    With `weights` (a learnable mapping, (I, N * n)) the wiring is argmax(weights, dim=0) and the
    backward continues through the mapping (see dwn_train/mapping.py); else `mapping` (N, n).
    Internally LUT-major: the output is returned as the transpose of an (N, B) tensor.
    """

    @staticmethod
    def forward(ctx, x, luts, weights, mapping, layer):
        num, size = luts.shape
        if weights is not None:
            mapping = layer.mapping.indices().view(num, -1)  # argmax(weights, dim=0)
        ctx.layer = layer
        ctx.kernels = use_kernels(layer, x, size.bit_length() - 1)
        if ctx.kernels:
            from . import cuda_lut

            out, addr = cuda_lut.forward(x, luts, mapping, layer.ste)
            ctx.save_for_backward(x, luts, weights, mapping, addr)
            return out
        addr = lut_addresses(x, mapping)
        values = luts.reshape(-1).take(_flat_index(addr, size))  # (N, B)
        ctx.save_for_backward(x, luts, weights, mapping, addr)
        out = (values > 0).to(values.dtype) if layer.ste else values
        return out.t()

    @staticmethod
    def backward(ctx, grad):
        if ctx.kernels:
            return _backward_kernels(ctx, grad)
        x, luts, weights, mapping, addr = ctx.saved_tensors
        layer = ctx.layer
        num, size = luts.shape
        flat = _flat_index(addr, size)
        grad_t = grad.t().contiguous()  # (N, B)
        grad_x = grad_luts = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_luts = torch.zeros(luts.numel(), dtype=grad.dtype, device=grad.device)
            grad_luts = grad_luts.index_add_(0, flat.view(-1), grad_t.view(-1)).view_as(luts)
        need_x, need_w = ctx.needs_input_grad[0], weights is not None and ctx.needs_input_grad[2]
        if need_x or need_w:
            wires = _wire_gradients(luts.detach(), layer._terms, flat, grad_t)  # (n, N, B)
            if weights is not None:
                wires = wires.permute(2, 1, 0).reshape(x.shape[0], -1)  # (B, N * n), wire j*n + l
                grad_x, grad_w = mapping_backward(x, weights, layer.mapping, wires, need_x, need_w)
            else:
                grad_x = torch.zeros(x.shape[1], x.shape[0], dtype=grad.dtype, device=grad.device)
                grad_x.index_add_(0, mapping.t().reshape(-1), wires.view(-1, x.shape[0]))
                grad_x = grad_x.t()
        return grad_x, grad_luts, grad_w, None, None


def use_kernels(layer, x: torch.Tensor, n: int) -> bool:
    """Whether this call runs on the CUDA kernels: backend 'auto' uses them for CUDA tensors when
    CuPy works and n fits; 'cuda' insists (a clear error otherwise); 'torch' never does."""
    backend = getattr(layer, "backend", "torch")
    if backend == "torch":
        return False
    from . import kernels

    problem = None
    if not x.is_cuda:
        problem = "the inputs are not CUDA tensors"
    elif n > kernels.MAX_KERNEL_N:
        problem = f"n={n} exceeds the kernels' limit of {kernels.MAX_KERNEL_N}"
    elif not kernels.available():
        problem = "CuPy is not installed (pip install 'dwn-train[cuda]')"
    if problem and backend == "cuda":
        raise DWNError(f"backend='cuda' cannot run: {problem}; use backend='auto' or 'torch'.")
    return problem is None


def _backward_kernels(ctx, grad):
    from . import cuda_lut

    x, luts, weights, mapping, addr = ctx.saved_tensors
    layer = ctx.layer
    num, size = luts.shape
    n = size.bit_length() - 1
    grad = grad.contiguous()
    grad_x = grad_luts = grad_w = None
    if ctx.needs_input_grad[1]:
        grad_luts = cuda_lut.lut_gradient(grad, addr, num, n, layer.deterministic)
    need_x, need_w = ctx.needs_input_grad[0], weights is not None and ctx.needs_input_grad[2]
    if need_x or need_w:
        table = cuda_lut.derivative_table(luts.detach(), layer.efd, layer.alpha, layer.beta)
        wires = cuda_lut.wire_gradients(grad, addr, table)  # (B, N * n)
        if weights is not None:
            grad_x, grad_w = mapping_backward(x, weights, layer.mapping, wires, need_x, need_w)
        else:
            offsets, order = cuda_lut.inverse_mapping(layer, mapping, x.shape[1])
            grad_x = cuda_lut.gather_wires(wires, offsets, order, x.shape[1])
    return grad_x, grad_luts, grad_w, None, None


def _wire_gradients(luts, terms, flat, grad_t) -> torch.Tensor:
    """g[i, j] * D[j, addr(i, j), l] for every input bit, LUT and sample: (n, N, B)."""
    num, size = luts.shape
    table = derivative_table(luts, terms).transpose(0, 1)  # (n, N, 2^n)
    n = table.shape[0]
    table = table.reshape(n, num * size)
    rows = table.gather(1, flat.view(1, -1).expand(n, -1)).view(n, *flat.shape)
    return rows.mul_(grad_t)


def lut_forward(x, luts, layer, mapping=None, weights=None) -> torch.Tensor:
    """Apply a layer of LUTs: x (B, I), luts (N, 2**n) -> (B, N); see LUTFunction. `layer` supplies
    ste, the EFD terms, backend and (with weights) the LearnableMapping."""
    return LUTFunction.apply(x, luts, weights, mapping, layer)
