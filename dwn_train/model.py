"""The one config -> nn.Module hop: encoders and models from the `encoding` and `model` groups.

Derived sizes are computed here, never written in YAML: layer 0's input width is
features x bits, each next layer reads the previous one's outputs, and GroupSum's k is the
number of classes.
"""

from __future__ import annotations

import math

from torch import nn

from .errors import DWNError, InvalidArgument
from .layers import GroupSum, LUTLayer, ReductionHead, check_lut_args
from .lut import EFD_VARIANTS, MAX_N
from .regularizers import KINDS as REGULARIZERS
from .resources import check_memory
from .thermometer import DistributiveThermometer, GaussianThermometer, Thermometer

ENCODERS = {"distributive": DistributiveThermometer, "uniform": Thermometer, "gaussian": GaussianThermometer}
# LUTLayer argument -> its key in a model.layers entry, where the names differ
_LAYER_KEYS = {"output_size": "out_features"}


def build_encoder(cfg) -> Thermometer:
    """An unfitted thermometer from the `encoding` config."""
    return ENCODERS[cfg.kind](int(cfg.num_bits), feature_wise=bool(cfg.feature_wise))


def check_encoding(cfg) -> None:
    """Check the `encoding` group's values; a DWNError names the key."""
    if cfg.kind not in ENCODERS:
        raise DWNError(f"encoding.kind must be one of {', '.join(ENCODERS)}; got {cfg.kind!r}.")
    if cfg.num_bits is None or cfg.num_bits < 1:
        raise DWNError(f"encoding.num_bits must be a positive integer; got {cfg.num_bits}.")


def check_model(cfg) -> None:
    """Check the `model` group's values (before any data loads); a DWNError names the key."""
    if not cfg.layers:
        raise DWNError("model.layers is empty; give at least one LUT layer.")
    for index, layer in enumerate(cfg.layers):
        try:  # LUTLayer's own checks, reported under the config key
            check_lut_args(1, layer.out_features, layer.n, layer.mapping, layer.efd, layer.lm_tau, layer.alpha, layer.beta)
        except InvalidArgument as exc:
            raise exc.under(f"model.layers[{index}].{_LAYER_KEYS.get(exc.name, exc.name)}") from None
    head = cfg.head
    if head.kind not in HEADS:
        raise DWNError(f"model.head.kind must be one of {', '.join(HEADS)}; got {head.kind!r}.")
    if not 0 < head.tau < math.inf:
        raise DWNError(f"model.head.tau must be a finite number > 0; got {head.tau}.")
    if head.kind == "reduction" and not 2 <= head.n <= MAX_N:
        raise DWNError(f"model.head.n must be between 2 and {MAX_N} (inputs per LUT of the reduction); got {head.n}.")
    if head.efd not in EFD_VARIANTS:
        raise DWNError(f"model.head.efd must be one of {', '.join(EFD_VARIANTS)}; got {head.efd!r}.")
    reg = cfg.regularizer
    if reg.kind not in REGULARIZERS or not 0 <= reg.weight < math.inf:
        raise DWNError(f"model.regularizer needs kind in {', '.join(REGULARIZERS)} and a finite weight >= 0; "
                       f"got kind={reg.kind!r}, weight={reg.weight}.")


def build_model(cfg, in_features: int, num_classes: int, bytes_per_parameter: int = 4) -> nn.Sequential:
    """LUT layers then the head; `cfg` is the `model` config group (checked by check_model).
    `bytes_per_parameter`: what this process's memory will hold per parameter (4, float32; 16 when
    it also trains them: gradients and two Adam moments); a model that cannot fit is refused first."""
    sizes, width = 0, in_features
    for layer in cfg.layers:
        n, out = int(layer.n), int(layer.out_features)
        sizes += out * 2**n + (width * out * n if layer.mapping == "learnable" else 0)
        width = out
    check_memory(bytes_per_parameter * sizes, "the model" + (" (parameters, gradients and optimizer state)"
                 if bytes_per_parameter > 4 else ""), "model.layers[*].out_features or n")
    modules, width = [], in_features
    for layer in cfg.layers:
        modules.append(LUTLayer(width, int(layer.out_features), n=int(layer.n), mapping=layer.mapping,
                                alpha=layer.alpha, beta=layer.beta, ste=layer.ste, clamp_luts=layer.clamp_luts,
                                lm_tau=layer.lm_tau, efd=layer.efd))
        width = int(layer.out_features)
    modules.append(HEADS[cfg.head.kind](cfg.head, width, num_classes))
    return nn.Sequential(*modules)


def _group_sum(cfg, width: int, num_classes: int) -> nn.Module:
    """Popcount per class; the last layer's width must split into the classes."""
    if width % num_classes:
        raise DWNError(f"The last layer's {width} outputs cannot be split into {num_classes} equal GroupSum "
                       f"groups; make model.layers[-1].out_features a multiple of {num_classes}.")
    return GroupSum(num_classes, tau=cfg.tau)


def _reduction(cfg, width: int, num_classes: int) -> nn.Module:
    """The learnable reduction pyramids (paper section 3.3)."""
    return ReductionHead(width, num_classes, n=cfg.n, tau=cfg.tau, efd=cfg.efd)


HEADS = {"group_sum": _group_sum, "reduction": _reduction}


def count_luts(model: nn.Module) -> int:
    """LUTs in the model, reduction pyramids included."""
    return sum(m.out_features for m in model.modules() if isinstance(m, LUTLayer))


def input_width(feature_shape, num_bits: int) -> int:
    return math.prod(feature_shape) * num_bits
