"""The LUT operation: its contract, the EFD variants, and the autograd Function over two backends.

Conventions, written once here and followed by both backends, the exporters and the tests:

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
Bacellar et al. 2024, eq. 6) or [H == 0] ('fd', the plain finite difference of bit l). Every
variant is written as a sum of terms c * t**H (`EFD`, below); both backends build D from those
terms, so the variant chosen in the config reaches both the same way:
``model.layers[i].efd`` -> ``LUTLayer(efd=...)`` -> ``LUTSpec.terms`` -> ``torch_lut`` / ``cuda_lut``.

Backends. ``dwn_train/torch_lut.py`` (CPU, and any torch device) and ``dwn_train/cuda_lut.py``
(the kernels in ``kernels/lut.cu``) are twins with one signature::

    forward(x, luts, mapping, spec)            -> (out (B, N), saved)
    backward(saved, grad, spec, needs)         -> (grad_luts (N, 2**n) or None, grad_wires or None)
    scatter_wires(grad_wires, mapping, inverse, I, spec) -> grad_x (B, I)   [fixed mappings]
    inverse_mapping(mapping, inputs)           -> what scatter_wires needs (None for torch)

and one data layout, LUT-major (samples along the fastest axis, so GPU threads i, i+1 touch
neighbouring memory and CPU gathers move whole rows): ``out`` is the transpose view of an (N, B)
tensor; ``saved = (luts, addr)`` with ``addr`` (N, B) holding addr(i, j) at [j, i]; ``grad_wires``
is (N, n, B), the gradient reaching address bit l of LUT j for sample i (a strided view is
allowed). A learnable mapping takes ``grad_wires`` on through dwn_train/mapping.py; a fixed one
through the backend's ``scatter_wires``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import cuda_lut, kernels, torch_lut
from .errors import DWNError
from .mapping import mapping_backward

MAX_N = 16
BACKENDS = ("auto", "torch", "cuda")


def _gauss_legendre(n: int, alpha: float, beta: float) -> tuple[tuple[float, float], ...]:
    """1/(H+1) = integral_0^1 t**H dt, exact for H <= n - 1 with ceil(n/2) Gauss-Legendre nodes."""
    nodes, weights = np.polynomial.legendre.leggauss(max(1, (n + 1) // 2))
    return tuple((float(w) / 2.0, (float(x) + 1.0) / 2.0) for x, w in zip(nodes, weights))  # [-1, 1] -> [0, 1]


def default_alpha(n: int) -> float:
    """The exponential EFD's alpha when none is given: 0.5 * 0.75**(n - 1) (torch-dwn's default)."""
    return 0.5 * 0.75 ** (n - 1)


DEFAULT_BETA = 0.25 / 0.75  # the exponential EFD's beta when none is given (torch-dwn's default)


# The EFD variants: name -> (n, alpha, beta) -> terms (c, t) with w(H) = sum c * t**H for H < n.
EFD = {
    "exponential": lambda n, alpha, beta: ((float(alpha), float(beta)),),
    "paper": _gauss_legendre,
    "fd": lambda n, alpha, beta: ((1.0, 0.0),),
}
EFD_VARIANTS = tuple(EFD)


def efd_terms(variant: str, n: int, alpha: float, beta: float) -> tuple[tuple[float, float], ...]:
    """The EFD weight w(H) of `variant` as terms (c, t) with w(H) = sum c * t**H for H < n."""
    if variant not in EFD:
        raise DWNError(f"efd must be one of {', '.join(EFD_VARIANTS)}; got {variant!r}.")
    return EFD[variant](n, alpha, beta)


@dataclass(frozen=True)
class LUTSpec:
    """Everything the LUT operation needs besides tensors; a LUTLayer owns one.

    n: inputs per LUT; ste: binarise the output (straight-through gradient); efd, alpha, beta: the
    derivative estimate, frozen into `terms`; backend: 'auto' | 'torch' | 'cuda'; deterministic:
    gradients summed without float atomics on a GPU (bit-identical run to run): the CUDA kernels in
    a fixed order, the torch backend on CUDA under torch's deterministic algorithms.
    """

    n: int
    ste: bool = True
    efd: str = "exponential"
    alpha: float | None = None  # None: default_alpha(n)
    beta: float | None = None  # None: DEFAULT_BETA
    backend: str = "auto"
    deterministic: bool = False
    terms: tuple = field(init=False, compare=False)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise DWNError(f"LUTLayer backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}.")
        if self.alpha is None:
            object.__setattr__(self, "alpha", default_alpha(self.n))
        if self.beta is None:
            object.__setattr__(self, "beta", DEFAULT_BETA)
        object.__setattr__(self, "terms", efd_terms(self.efd, self.n, self.alpha, self.beta))

    def with_(self, **changes) -> "LUTSpec":
        return replace(self, **changes)


def select_backend(spec: LUTSpec, x: torch.Tensor, luts: torch.Tensor):
    """The backend module for this call: 'auto' takes the CUDA kernels for float32 CUDA tensors
    when CuPy works and n fits, else torch; 'cuda' insists (one clear error otherwise)."""
    if spec.backend == "torch":
        return torch_lut
    problem = None
    if not x.is_cuda:
        problem = "the inputs are not CUDA tensors"
    elif x.dtype != torch.float32 or luts.dtype != torch.float32:
        problem = f"the kernels take float32 inputs and tables; got {x.dtype} and {luts.dtype}"
    elif spec.n > kernels.MAX_KERNEL_N:
        problem = f"n={spec.n} exceeds the kernels' limit of {kernels.MAX_KERNEL_N}"
    elif not kernels.available(x.device):
        problem = ("CuPy is not installed (pip install 'dwn-train[cuda]') or the kernels did not load on "
                   f"{x.device} (see the warning)")
    if problem is None:
        return cuda_lut
    if spec.backend == "cuda":
        raise DWNError(f"backend='cuda' cannot run: {problem}; use backend='auto' or 'torch'.")
    return torch_lut


class LUTFunction(torch.autograd.Function):
    """y[i, j] = luts[j, addr(i, j)] (binarised when spec.ste), with the EFD backward.

    Inputs: x (B, I); luts (N, 2**n); mapping (N, n) int64, the wiring of this call; `backend`
    (torch_lut or cuda_lut); `inverse`, the backend's inverse mapping (fixed mappings only, else
    None); `learnable` (weights (I, N * n), tau, grad_buffer) when the wiring is the argmax of a
    learnable mapping, whose backward then continues through dwn_train/mapping.py.
    """

    @staticmethod
    def forward(ctx, x, luts, weights, mapping, spec, backend, inverse, learnable):
        out, saved = backend.forward(x, luts, mapping, spec)
        ctx.save_for_backward(x, weights, mapping, *saved)
        ctx.spec, ctx.backend, ctx.inverse, ctx.learnable = spec, backend, inverse, learnable
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weights, mapping, *saved = ctx.saved_tensors
        need_x, need_luts = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_w = weights is not None and ctx.needs_input_grad[2]
        needs = (need_luts, need_x or need_w)
        grad_luts, grad_wires = ctx.backend.backward(saved, grad, ctx.spec, needs)
        grad_x = grad_w = None
        if grad_wires is not None:
            if weights is not None:
                tau, buffer = ctx.learnable
                wires = grad_wires.flatten(0, 1).t()  # (B, N * n), wire j*n + l
                grad_x, grad_w = mapping_backward(x, weights, tau, buffer, wires, need_x, need_w)
            else:
                grad_x = ctx.backend.scatter_wires(grad_wires, mapping, ctx.inverse, x.shape[1], ctx.spec)
        return grad_x, grad_luts, grad_w, None, None, None, None, None


def lut_forward(x, luts, mapping, spec: LUTSpec, *, backend=None, inverse=None, weights=None,
                learnable=None) -> torch.Tensor:
    """Apply a layer of LUTs: x (B, I), luts (N, 2**n), mapping (N, n) -> (B, N); see LUTFunction.

    backend: chosen by `select_backend` when None. inverse: the backend's inverse mapping of a
    fixed `mapping`, computed here when None (a LUTLayer passes its cached one). weights and
    learnable = (tau, grad_buffer): the learnable mapping whose argmax `mapping` is."""
    backend = backend or select_backend(spec, x, luts)
    if weights is None and inverse is None:
        inverse = backend.inverse_mapping(mapping, x.shape[1])
    return LUTFunction.apply(x, luts, weights, mapping, spec, backend, inverse, learnable)
