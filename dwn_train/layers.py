"""The network's modules: LUTLayer and GroupSum (argument names and semantics as torch-dwn's)."""

from __future__ import annotations

import torch
from torch import nn

from .errors import DWNError
from .lut import EFD_VARIANTS, MAX_N, efd_terms, lut_forward
from .mapping import (
    LearnableMapping,
    _check_positive,
    arange_mapping,
    check_input,
    random_mapping,
)


class LUTLayer(nn.Module):
    """A layer of `output_size` n-input lookup tables trained with the EFD.

    Args:
        input_size: I, width of the input (B, I).
        output_size: N, number of LUTs (width of the output (B, N)).
        n: inputs per LUT (1..16); each table has 2**n entries.
        mapping: 'random' (balanced random wiring), 'arange', 'learnable' (a LearnableMapping in
            front) or an integer tensor (N, n) of input indices.
        alpha, beta: the exponential EFD's weight alpha * beta**H; defaults 0.5 * 0.75**(n-1)
            and 0.25 / 0.75.
        ste: output the sign bit of the addressed entry (1.0 if > 0 else 0.0) with a
            straight-through gradient; False outputs the entry itself.
        clamp_luts: clamp the tables to [-1, 1] before each training forward.
        lm_tau: softmax temperature of the learnable mapping.
        efd: derivative estimate, 'exponential' (torch-dwn's), 'paper' (1/(H+1)) or 'fd'.
    Attributes to set after construction: `backend` ('auto': the CUDA kernels for CUDA tensors
    when CuPy works, else torch; 'cuda'; 'torch') and `deterministic` (CUDA kernels without float
    atomics, bit-identical run to run).
    The address bit order and EFD formulas are documented in dwn_train/lut.py.
    """

    def __init__(self, input_size, output_size, n, mapping="random", alpha=None, beta=None,
                 ste=True, clamp_luts=True, lm_tau=0.001, efd="exponential"):
        super().__init__()
        _check_positive("input_size", input_size)
        _check_positive("output_size", output_size)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise DWNError(f"LUTLayer n (inputs per LUT) must be an integer in 1..{MAX_N}; got {n!r}.")
        if efd not in EFD_VARIANTS:
            raise DWNError(f"LUTLayer efd must be one of {', '.join(EFD_VARIANTS)}; got {efd!r}.")
        self.input_size, self.output_size, self.n = input_size, output_size, n
        self.alpha = 0.5 * 0.75 ** (n - 1) if alpha is None else float(alpha)
        self.beta = 0.25 / 0.75 if beta is None else float(beta)
        self.ste, self.clamp_luts, self.lm_tau, self.efd = bool(ste), bool(clamp_luts), lm_tau, efd
        self._terms = efd_terms(efd, n, self.alpha, self.beta)
        self.backend, self.deterministic = "auto", False
        self.luts = nn.Parameter(torch.rand(output_size, 2**n) * 2 - 1)
        if isinstance(mapping, str) and mapping == "learnable":
            self.mapping = LearnableMapping(input_size, output_size * n, tau=lm_tau)
        else:
            self.register_buffer("mapping", self._fixed_mapping(mapping))

    def _fixed_mapping(self, mapping) -> torch.Tensor:
        shape = (self.output_size, self.n)
        if isinstance(mapping, str):
            if mapping == "random":
                return random_mapping(self.input_size, *shape)
            if mapping == "arange":
                return arange_mapping(self.input_size, *shape)
            raise DWNError(
                f"LUTLayer mapping must be 'random', 'arange', 'learnable' or an integer tensor; got {mapping!r}."
            )
        tensor = torch.as_tensor(mapping)
        if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tuple(tensor.shape) != shape:
            raise DWNError(f"LUTLayer mapping tensor must be integer with shape {shape}; got "
                           f"{tensor.dtype} {tuple(tensor.shape)}.")
        if tensor.numel() and not (0 <= int(tensor.min()) and int(tensor.max()) < self.input_size):
            raise DWNError(f"LUTLayer mapping indices must lie in 0..{self.input_size - 1}.")
        return tensor.to(torch.int64).clone()

    @property
    def learnable(self) -> bool:
        return isinstance(self.mapping, LearnableMapping)

    def wiring(self) -> torch.Tensor:
        """The input indices (N, n) every LUT reads now (the argmax for a learnable mapping)."""
        if self.learnable:
            return self.mapping.indices().view(self.output_size, self.n)
        return self.mapping

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size, "LUTLayer")
        if self.training and self.clamp_luts:
            with torch.no_grad():
                self.luts.clamp_(-1.0, 1.0)
        if self.learnable:
            return lut_forward(x, self.luts, self, weights=self.mapping.weights)
        return lut_forward(x, self.luts, self, mapping=self.mapping)

    def extra_repr(self) -> str:
        kind = "learnable" if self.learnable else "fixed"
        return (f"input_size={self.input_size}, output_size={self.output_size}, n={self.n}, "
                f"mapping={kind}, efd={self.efd}, alpha={self.alpha:.4g}, beta={self.beta:.4g}")


class GroupSum(nn.Module):
    """Sum consecutive groups of the last dimension into k scores, divided by tau.

    (..., N) -> (..., k). The group size is ceil(N / k); the input is zero-padded to k groups
    when N is not divisible by k.
    """

    def __init__(self, k, tau=1):
        super().__init__()
        _check_positive("GroupSum k", k)
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
        _check_positive("in_features", in_features)
        if num_classes < 2:
            raise DWNError(f"ReductionHead needs at least 2 classes; got {num_classes}.")
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
