"""The network's modules: LUTLayer and GroupSum (argument names and semantics as torch-dwn's)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import DWNError, InvalidArgument, is_int, is_number
from .lut import EFD_VARIANTS, MAX_N, LUTSpec, lut_forward, select_backend
from .mapping import (
    LearnableMapping,
    _check_positive,
    arange_mapping,
    check_input,
    random_mapping,
)

MAPPINGS = ("random", "arange", "learnable")


def check_lut_args(input_size, output_size, n, mapping, efd, lm_tau, alpha=None, beta=None) -> None:
    """LUTLayer's argument checks (a mapping tensor is checked against the shape later); the
    config validation calls this too, so every check is written once. Raises InvalidArgument."""
    _check_positive("LUTLayer", "input_size", input_size)
    _check_positive("LUTLayer", "output_size", output_size)
    if not is_int(n) or not 1 <= n <= MAX_N:
        raise InvalidArgument("LUTLayer", "n", f"must be an integer in 1..{MAX_N} (inputs per LUT)", n)
    if isinstance(mapping, str) and mapping not in MAPPINGS:
        raise InvalidArgument("LUTLayer", "mapping", f"must be one of {', '.join(MAPPINGS)} or an integer tensor",
                              mapping)
    if efd not in EFD_VARIANTS:
        raise InvalidArgument("LUTLayer", "efd", f"must be one of {', '.join(EFD_VARIANTS)}", efd)
    if not is_number(lm_tau) or not 0 < lm_tau < math.inf:
        raise InvalidArgument("LUTLayer", "lm_tau", "must be a finite number > 0", lm_tau)
    for name, value in (("alpha", alpha), ("beta", beta)):  # None: the EFD variant's default
        if value is not None and not (is_number(value) and math.isfinite(value)):
            raise InvalidArgument("LUTLayer", name, "must be a finite number (or None for the default)", value)


class LUTLayer(nn.Module):
    """A layer of `output_size` n-input lookup tables trained with the EFD.

    Args (torch-dwn's names):
        input_size: I, width of the input (B, I); stored as `in_features`.
        output_size: N, number of LUTs (width of the output (B, N)); stored as `out_features`.
        n: inputs per LUT (1..16); each table has 2**n entries.
        mapping: 'random' (balanced random wiring), 'arange', 'learnable' (a LearnableMapping in
            front) or an integer tensor (N, n) of input indices.
        alpha, beta: the exponential EFD's weight alpha * beta**H; None: lut.default_alpha(n)
            and lut.DEFAULT_BETA, torch-dwn's defaults.
        ste: output the sign bit of the addressed entry (1.0 if > 0 else 0.0) with a
            straight-through gradient; False outputs the entry itself.
        clamp_luts: clamp the tables to [-1, 1] before each training forward.
        lm_tau: softmax temperature of the learnable mapping.
        efd: derivative estimate, 'exponential' (torch-dwn's), 'paper' (1/(H+1)) or 'fd'.
    Attributes to set after construction: `backend` ('auto': the CUDA kernels for float32 CUDA
    tensors when CuPy works, else torch; 'cuda'; 'torch') and `deterministic` (gradients
    summed without float atomics on a GPU, bit-identical run to run). Both live in `spec` (a frozen LUTSpec, what
    the LUT operation receives). The address bit order and EFD formulas: dwn_train/lut.py.
    Arguments are validated here, once; a bad one raises InvalidArgument naming it.
    """

    def __init__(self, input_size, output_size, n, mapping="random", alpha=None, beta=None,
                 ste=True, clamp_luts=True, lm_tau=0.001, efd="exponential"):
        super().__init__()
        check_lut_args(input_size, output_size, n, mapping, efd, lm_tau, alpha, beta)
        self.in_features, self.out_features, self.n = input_size, output_size, n
        self.clamp_luts, self.lm_tau = bool(clamp_luts), lm_tau
        self.spec = LUTSpec(n=n, ste=bool(ste), efd=efd,
                            alpha=None if alpha is None else float(alpha), beta=None if beta is None else float(beta))
        # the backend's inverse mapping of a fixed wiring: (key, value), see _inverse
        self._inverse_cache = None
        self.luts = nn.Parameter(torch.rand(output_size, 2**n) * 2 - 1)
        if isinstance(mapping, str) and mapping == "learnable":
            self.mapping = LearnableMapping(input_size, output_size * n, tau=lm_tau)
        else:
            self.register_buffer("mapping", self._fixed_mapping(mapping))

    # torch-dwn's attribute names, and the spec's fields as attributes
    input_size = property(lambda self: self.in_features)
    output_size = property(lambda self: self.out_features)
    ste = property(lambda self: self.spec.ste)
    efd = property(lambda self: self.spec.efd)
    alpha = property(lambda self: self.spec.alpha)
    beta = property(lambda self: self.spec.beta)

    @property
    def backend(self) -> str:
        return self.spec.backend

    @backend.setter
    def backend(self, name: str) -> None:
        self.spec = self.spec.with_(backend=name)

    @property
    def deterministic(self) -> bool:
        return self.spec.deterministic

    @deterministic.setter
    def deterministic(self, value: bool) -> None:
        self.spec = self.spec.with_(deterministic=bool(value))

    def _fixed_mapping(self, mapping) -> torch.Tensor:
        shape = (self.out_features, self.n)
        if isinstance(mapping, str):
            if mapping == "random":
                return random_mapping(self.in_features, *shape)
            return arange_mapping(self.in_features, *shape)  # the names were checked by check_lut_args
        tensor = torch.as_tensor(mapping)
        if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tuple(tensor.shape) != shape:
            raise InvalidArgument("LUTLayer", "mapping", f"must be an integer tensor with shape {shape}",
                                  f"{tensor.dtype} {tuple(tensor.shape)}")
        if tensor.numel() and not (0 <= int(tensor.min()) and int(tensor.max()) < self.in_features):
            raise InvalidArgument("LUTLayer", "mapping", f"indices must lie in 0..{self.in_features - 1}",
                                  f"{int(tensor.min())}..{int(tensor.max())}")
        return tensor.to(torch.int64).clone()

    @property
    def learnable(self) -> bool:
        return isinstance(self.mapping, LearnableMapping)

    def wiring(self) -> torch.Tensor:
        """The input indices (N, n) every LUT reads now (the argmax for a learnable mapping)."""
        if self.learnable:
            return self.mapping.indices().view(self.out_features, self.n)
        return self.mapping

    def _inverse(self, backend):
        """The backend's inverse mapping of the fixed wiring, computed once per wiring and backend
        (the CUDA one synchronises, which a CUDA graph capture forbids on every step)."""
        key = (backend.__name__, self.mapping.device, self.mapping.data_ptr(), self.mapping._version)
        if self._inverse_cache is None or self._inverse_cache[0] != key:
            self._inverse_cache = (key, backend.inverse_mapping(self.mapping, self.in_features))
        return self._inverse_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_features, "LUTLayer")
        if self.training and self.clamp_luts:
            with torch.no_grad():
                self.luts.clamp_(-1.0, 1.0)
        if self.learnable:
            m = self.mapping
            return lut_forward(x, self.luts, self.wiring(), self.spec, weights=m.weights,
                               learnable=(m.tau, m.grad_buffer))
        backend = select_backend(self.spec, x, self.luts)
        return lut_forward(x, self.luts, self.mapping, self.spec, backend=backend, inverse=self._inverse(backend))

    def extra_repr(self) -> str:
        kind = "learnable" if self.learnable else "fixed"
        return (f"input_size={self.in_features}, output_size={self.out_features}, n={self.n}, "
                f"mapping={kind}, efd={self.efd}, alpha={self.alpha:.4g}, beta={self.beta:.4g}")


class GroupSum(nn.Module):
    """Sum consecutive groups of the last dimension into k scores, divided by tau.

    (..., N) -> (..., k). The group size is ceil(N / k); the input is zero-padded to k groups
    when N is not divisible by k.
    """

    def __init__(self, k, tau=1):
        super().__init__()
        _check_positive("GroupSum", "k", k)
        if not tau > 0:
            raise DWNError(f"GroupSum tau must be > 0; got {tau!r}.")
        self.k, self.tau = k, float(tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        group = -(-width // self.k)
        pad = group * self.k - width
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
        return x.unflatten(-1, (self.k, group)).sum(-1) / self.tau

    def extra_repr(self) -> str:
        return f"k={self.k}, tau={self.tau:.6g}"


class ReductionHead(nn.Module):
    """Learnable reduction (paper section 3.3): pyramids of n-input LUT layers instead of popcount.

    The paper does not say how its one-bit output is trained; this is our design. The input
    (B, W) is split into consecutive groups like GroupSum's: one group per class, or a single
    group for a binary task. Each group of n**k bits is reduced by k LUT layers (arange wiring, so
    LUT j reads inputs j*n .. j*n + n - 1 and never crosses a group) to one bit b. The logits are
    (2b - 1) / tau per class; for a binary task the single bit gives logits (-z/2, z/2) with
    z = (2b - 1) / tau, so cross-entropy is the logistic loss on z. Gradients reach the tables
    through the straight-through estimator and the EFD, like every other LUT layer.
    Shapes: (B, W) -> (B, num_classes).
    """

    def __init__(self, in_features: int, num_classes: int, n: int = 2, tau: float = 1.0, efd: str = "exponential"):
        super().__init__()
        _check_positive("ReductionHead", "in_features", in_features)
        if num_classes < 2:
            raise DWNError(f"ReductionHead needs at least 2 classes; got {num_classes}.")
        if not is_int(n) or not 2 <= n <= MAX_N:  # n = 1 would reduce nothing, level after level
            raise DWNError(f"ReductionHead n must be an integer between 2 and {MAX_N}; got {n!r}.")
        if efd not in EFD_VARIANTS:
            raise DWNError(f"ReductionHead efd must be one of {', '.join(EFD_VARIANTS)}; got {efd!r}.")
        self.num_classes, self.tau = num_classes, float(tau)
        groups = 1 if num_classes == 2 else num_classes
        size = in_features // groups
        depth = 0
        while n ** depth < size:
            depth += 1
        if in_features % groups or n ** depth != size or depth == 0:
            raise DWNError(f"model.head=reduction with n={n} needs the last layer's width to be "
                           f"{groups} x {n}^k (k >= 1); got {in_features}.")
        widths = [groups * n ** (depth - level) for level in range(1, depth + 1)]
        inputs = [in_features] + widths[:-1]
        self.levels = nn.Sequential(*(LUTLayer(i, o, n=n, mapping="arange", efd=efd) for i, o in zip(inputs, widths)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (2 * self.levels(x) - 1) / self.tau  # (B, groups)
        if self.num_classes == 2:
            return torch.cat([-score / 2, score / 2], dim=-1)
        return score

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau:.6g}"
