"""Thermometer encoders: real features -> z bits each, bit i = x > t_i (strict).

Thresholds for i = 1..z, per feature (over the samples, dim 0) or global (over all values):

    Thermometer (uniform)     t_i = min + i * (max - min) / (z + 1)
    GaussianThermometer       t_i = mean + std * Phi^-1(i / (z + 1))      (std unbiased, as torch.std)
    DistributiveThermometer   t_i = sorted(x)[int(N * i / (z + 1))]        (N values per feature)

Encoders are nn.Modules whose thresholds are a buffer, so a state_dict carries them.
Shapes: fit(x) takes (S, *F); binarize(x) takes (..., *F) and returns (..., *F, z) floats in {0, 1}.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import DWNError, is_int


class Thermometer(nn.Module):
    """Uniform thermometer: z thresholds evenly spaced between the minimum and maximum."""

    def __init__(self, num_bits, feature_wise=True):
        super().__init__()
        if not is_int(num_bits) or num_bits < 1:
            raise DWNError(f"num_bits must be a positive integer; got {num_bits!r}.")
        self.num_bits, self.feature_wise = num_bits, bool(feature_wise)
        self.register_buffer("thresholds", torch.empty(0))
        self.feature_shape: tuple[int, ...] | None = None

    # --- threshold rules (x: (S, *F) float64, reduced over dim 0, or over everything) ---
    def _thresholds(self, x: torch.Tensor) -> torch.Tensor:
        low, high = _reduce(x, self.feature_wise, "min"), _reduce(x, self.feature_wise, "max")
        steps = _levels(self.num_bits, x)
        return low.unsqueeze(-1) + steps * (high - low).unsqueeze(-1)

    @property
    def fitted(self) -> bool:
        return self.thresholds.numel() > 0

    def fit(self, x):
        """Compute the thresholds from training data x (S, *F); returns self."""
        data = _as_tensor(x, "fit").to(torch.float64)
        if data.dim() < 1 or data.shape[0] < 1:
            raise DWNError(f"{type(self).__name__}.fit needs at least one sample; got shape {tuple(data.shape)}.")
        self.feature_shape = tuple(data.shape[1:])
        self.thresholds = self._thresholds(data).to(torch.float32)
        return self

    def binarize(self, x) -> torch.Tensor:
        """x (..., *F) -> float tensor (..., *F, z) with bit i = x > t_i."""
        if not self.fitted:
            raise DWNError(f"{type(self).__name__}.binarize called before fit(); fit it on training data first.")
        data = _as_tensor(x, "binarize")
        if self.feature_wise:
            shape = self.thresholds.shape[:-1]
            if tuple(data.shape[data.dim() - len(shape):]) != tuple(shape) or data.dim() < len(shape):
                raise DWNError(f"{type(self).__name__}.binarize expects trailing feature shape "
                               f"{tuple(shape)} (as fitted); got input of shape {tuple(data.shape)}.")
        # compare in float64 so neither side is rounded (uint8 images, float64 tables, ...)
        thresholds = self.thresholds.to(device=data.device, dtype=torch.float64)
        return (data.to(torch.float64).unsqueeze(-1) > thresholds).to(torch.get_default_dtype())

    def forward(self, x) -> torch.Tensor:
        return self.binarize(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # thresholds' shape is only known after fit: take the stored one before loading
        key = prefix + "thresholds"
        if key in state_dict:
            self.thresholds = torch.empty_like(state_dict[key], device=self.thresholds.device)
            self.feature_shape = tuple(state_dict[key].shape[:-1]) if self.feature_wise else None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"num_bits={self.num_bits}, feature_wise={self.feature_wise}, fitted={self.fitted}"


class GaussianThermometer(Thermometer):
    """Thresholds at the z + 1 equal-probability quantiles of a normal fitted to the data."""

    def _thresholds(self, x):
        mean, std = _reduce(x, self.feature_wise, "mean"), _reduce(x, self.feature_wise, "std")
        quantiles = torch.special.ndtri(_levels(self.num_bits, x))
        return mean.unsqueeze(-1) + std.unsqueeze(-1) * quantiles


class DistributiveThermometer(Thermometer):
    """Thresholds at the data's own quantiles, so each bit splits the samples evenly."""

    def _thresholds(self, x):
        values = x if self.feature_wise else x.reshape(-1, 1)
        count = values.shape[0]
        ordered = values.sort(dim=0).values
        index = torch.tensor([int(count * i / (self.num_bits + 1)) for i in range(1, self.num_bits + 1)])
        out = ordered.index_select(0, index)  # (z, *F)
        out = out.movedim(0, -1)
        return out.reshape(self.num_bits) if not self.feature_wise else out


def _levels(num_bits: int, like: torch.Tensor) -> torch.Tensor:
    """i / (z + 1) for i = 1..z, float64."""
    return torch.arange(1, num_bits + 1, dtype=torch.float64, device=like.device) / (num_bits + 1)


def _reduce(x: torch.Tensor, feature_wise: bool, how: str) -> torch.Tensor:
    data = x if feature_wise else x.reshape(-1)
    if how == "min":
        return data.min(dim=0).values
    if how == "max":
        return data.max(dim=0).values
    if how == "mean":
        return data.mean(dim=0)
    return data.std(dim=0) if data.shape[0] > 1 else torch.zeros_like(data[0])


def _as_tensor(x, where: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DWNError(f"Thermometer.{where} expects a torch tensor or numpy array; got {type(x).__name__}.")
    if x.dtype == torch.bool or x.is_complex():
        raise DWNError(f"Thermometer.{where} expects real numbers; got dtype {x.dtype}.")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise DWNError(f"Thermometer.{where} got NaN or infinite values; clean or impute the data first.")
    return x
