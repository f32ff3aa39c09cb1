"""How LUT inputs are wired: fixed mappings (random, arange) and the learnable mapping.

LearnableMapping (Bacellar et al. 2024, section 3.2): a weight matrix W of shape (I, O); output o
reads input argmax_i W[i, o]. Its backward (as in torch-dwn) is

    dW = (2x - 1)^T g                     (I, O)
    dx = g softmax(W / tau, dim=0)^T      (B, I), only computed when an earlier layer needs it
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn

from .errors import DWNError, InvalidArgument, is_int


def random_mapping(input_size: int, output_size: int, n: int, generator=None) -> torch.Tensor:
    """A balanced random wiring (output_size, n) int64: concatenated random permutations of the
    inputs, so every input is used floor(n*O/I) or ceil(n*O/I) times. Uses torch's global RNG
    unless a generator is given."""
    total = output_size * n
    reps = math.ceil(total / input_size)
    perms = [torch.randperm(input_size, generator=generator) for _ in range(reps)]
    return torch.cat(perms)[:total].view(output_size, n)


def arange_mapping(input_size: int, output_size: int, n: int) -> torch.Tensor:
    """LUT j reads inputs (j*n + l) mod I: consecutive inputs, wrapping around."""
    return (torch.arange(output_size * n) % input_size).view(output_size, n)


def mapping_backward(x, weights, tau: float, buffer: "GradBuffer", grad, need_x: bool, need_w: bool):
    """Gradients of out = x[:, argmax(weights, 0)] given grad = dLoss/d out (B, O).

    Returns (grad_x (B, I) or None, grad_w (I, O) or None). The weight gradient is written into
    `buffer` (see GradBuffer); tau is the softmax temperature of the input gradient.
    """
    grad_x = grad_w = None
    if need_w:
        signs = (2 * x - 1).t()
        grad_w = torch.mm(signs, grad, out=buffer.get(weights))
        # a fresh alias (not the buffer itself), so autograd can take it as .grad without a copy
        grad_w = grad_w.detach()
    if need_x:
        grad_x = grad @ torch.softmax(weights / tau, dim=0).t()
    return grad_x, grad_w


def column_argmax(weights: torch.Tensor, block: int = 64) -> torch.Tensor:
    """argmax over dim 0 of a (I, O) matrix: for each column the row of its first maximum (a NaN
    counts as the maximum, as in torch.max). Equal to weights.max(dim=0).indices.

    On the CPU torch's indexed reduction over the leading dimension of a contiguous matrix runs
    about 10x slower than a plain amax (it dominated a training step of the MNIST recipe: 130 of
    180 ms). Here the rows are cut into blocks: one vectorised amax per block finds, for each
    column, the first block holding its maximum; then only that block's rows are searched.
    """
    rows, cols = weights.shape
    if weights.device.type != "cpu" or rows <= block:
        return weights.max(dim=0).indices
    best = weights[:block].amax(dim=0)
    best_block = torch.zeros(cols, dtype=torch.long, device=weights.device)
    for b, start in enumerate(range(block, rows, block), start=1):
        peak = weights[start:start + block].amax(dim=0)
        better = (peak > best) | (peak.isnan() & ~best.isnan())
        best = torch.where(better, peak, best)
        best_block.masked_fill_(better, b)
    first = (best_block * block).clamp_(max=rows - block)  # the last block is read as the final `block` rows
    offsets = torch.arange(block, device=weights.device)
    within = weights.gather(0, first + offsets[:, None]).max(dim=0).indices
    return first + within


class GradBuffer:
    """Where a learnable mapping's weight gradient is written: one tensor reused across steps.

    The gradient is as large as the weights (tens of MB); allocating it afresh every step costs
    more page faults than the matmul itself on the CPU. When `weights.grad` still holds this
    buffer (zero_grad(set_to_none=False), gradient accumulation), a fresh tensor is used instead
    so autograd can add to the existing gradient. Like every .grad in torch, the tensor is
    overwritten by a later backward: clone it to keep it.
    """

    def __init__(self):
        self.tensor: torch.Tensor | None = None

    def get(self, weights: torch.Tensor) -> torch.Tensor:
        buffer, current = self.tensor, weights.grad
        if (buffer is None or buffer.shape != weights.shape or buffer.dtype != weights.dtype
                or buffer.device != weights.device):
            buffer = self.tensor = torch.empty_like(weights)
        if current is not None and current.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr():
            return torch.empty_like(weights)
        return buffer


class LearnableMappingFunction(torch.autograd.Function):
    """out = x[:, index] (index = argmax(W, dim=0)) with the learnable-mapping backward."""

    @staticmethod
    def forward(ctx, x, weights, index, tau, buffer):
        ctx.save_for_backward(x, weights)
        ctx.tau, ctx.buffer = tau, buffer
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad):
        x, weights = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        return *mapping_backward(x, weights, ctx.tau, ctx.buffer, grad, need_x, need_w), None, None, None


class LearnableMapping(nn.Module):
    """Learned wiring from `input_size` inputs to `output_size` outputs.

    Args:
        input_size: I, the width of the input.
        output_size: O, the number of wires out (a LUTLayer uses output_size * n of them).
        tau: softmax temperature of the input gradient.
    Shapes: forward (B, I) -> (B, O); weights (I, O), initialised U[0, 1).
    """

    def __init__(self, input_size: int, output_size: int, tau: float = 0.001):
        super().__init__()
        _check_positive("LearnableMapping", "input_size", input_size)
        _check_positive("LearnableMapping", "output_size", output_size)
        if not tau > 0:
            raise DWNError(f"LearnableMapping tau must be > 0; got {tau!r}.")
        self.input_size, self.output_size, self.tau = input_size, output_size, float(tau)
        self.grad_buffer = GradBuffer()
        self._cached_index = None  # set by cached_wiring
        self.weights = nn.Parameter(torch.rand(input_size, output_size))

    def indices(self) -> torch.Tensor:
        """The current wiring: output o reads input indices()[o]; shape (O,). Inside
        `cached_wiring(model)` it is computed once for the whole block."""
        if self._cached_index is not None:
            return self._cached_index
        return column_argmax(self.weights.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.input_size, "LearnableMapping")
        return LearnableMappingFunction.apply(x, self.weights, self.indices(), self.tau, self.grad_buffer)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, output_size={self.output_size}, tau={self.tau}"


@contextmanager
def cached_wiring(model: nn.Module):
    """Within this block every learnable mapping in `model` computes its argmax once instead of
    once per forward: use it for evaluation, where the weights do not change. (A cache keyed on
    the weights' version is not safe: fused optimizers update them without bumping it.)"""
    mappings = [m for m in model.modules() if isinstance(m, LearnableMapping)]
    for m in mappings:
        m._cached_index = None
        m._cached_index = m.indices()
    try:
        yield model
    finally:
        for m in mappings:
            m._cached_index = None


def _check_positive(owner: str, name: str, value) -> None:
    if not is_int(value) or value < 1:
        raise InvalidArgument(owner, name, "must be a positive integer", value)


def check_input(x: torch.Tensor, width: int, who: str) -> None:
    """Raise a DWNError unless x is a (B, width) floating tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != width:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DWNError(f"{who} expects a (batch, {width}) tensor; got {shape}.")
    if not x.is_floating_point():
        raise DWNError(f"{who} expects a floating-point tensor; got dtype {x.dtype}.")
