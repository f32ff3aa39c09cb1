"""The one config -> nn.Module hop: encoders and models from the `encoding` and `model` groups.

Derived sizes are computed here, never written in YAML: layer 0's input width is
features x bits, each next layer reads the previous one's outputs, and GroupSum's k is the
number of classes.
"""

from __future__ import annotations

import math

from torch import nn

from .errors import DWNError
from .layers import GroupSum, LUTLayer, ReductionHead
from .lut import EFD_VARIANTS, MAX_N
from .regularizers import KINDS as REGULARIZERS
from .thermometer import DistributiveThermometer, GaussianThermometer, Thermometer

ENCODERS = {"distributive": DistributiveThermometer, "uniform": Thermometer, "gaussian": GaussianThermometer}
MAPPINGS = ("random", "arange", "learnable")


def build_encoder(cfg) -> Thermometer:
    """An unfitted thermometer from the `encoding` config."""
    cls = ENCODERS.get(cfg.kind)
    if cls is None:
        raise DWNError(f"encoding.kind={cfg.kind!r} is unknown; expected one of {', '.join(ENCODERS)}.")
    if cfg.num_bits < 1:
        raise DWNError(f"encoding.num_bits must be at least 1; got {cfg.num_bits}.")
    return cls(int(cfg.num_bits), feature_wise=bool(cfg.feature_wise))


def _check_layer(index: int, layer) -> None:
    where = f"model.layers[{index}]"
    if layer.out_features < 1:
        raise DWNError(f"{where}.out_features must be a positive integer; got {layer.out_features}.")
    if not 1 <= layer.n <= MAX_N:
        raise DWNError(f"{where}.n must be between 1 and {MAX_N}; got {layer.n}.")
    if layer.mapping not in MAPPINGS:
        raise DWNError(f"{where}.mapping must be one of {', '.join(MAPPINGS)}; got {layer.mapping!r}.")
    if layer.efd not in EFD_VARIANTS:
        raise DWNError(f"{where}.efd must be one of {', '.join(EFD_VARIANTS)}; got {layer.efd!r}.")
    if layer.lm_tau <= 0:
        raise DWNError(f"{where}.lm_tau must be > 0; got {layer.lm_tau}.")


def build_model(cfg, in_features: int, num_classes: int) -> nn.Sequential:
    """LUT layers then the head; `cfg` is the `model` config group."""
    if not cfg.layers:
        raise DWNError("model.layers is empty; give at least one LUT layer.")
    modules, width = [], in_features
    for index, layer in enumerate(cfg.layers):
        _check_layer(index, layer)
        modules.append(LUTLayer(width, int(layer.out_features), n=int(layer.n), mapping=layer.mapping,
                                alpha=layer.alpha, beta=layer.beta, ste=layer.ste, clamp_luts=layer.clamp_luts,
                                lm_tau=layer.lm_tau, efd=layer.efd))
        width = int(layer.out_features)
    modules.append(build_head(cfg.head, width, num_classes))
    reg = cfg.regularizer
    if reg.kind not in REGULARIZERS or reg.weight < 0:
        raise DWNError(f"model.regularizer needs kind in {', '.join(REGULARIZERS)} and weight >= 0; "
                       f"got kind={reg.kind!r}, weight={reg.weight}.")
    return nn.Sequential(*modules)


def build_head(cfg, width: int, num_classes: int) -> nn.Module:
    """GroupSum (popcount per class) or the learnable reduction pyramids."""
    if cfg.tau <= 0:
        raise DWNError(f"model.head.tau must be > 0; got {cfg.tau}.")
    if cfg.kind == "group_sum":
        if width % num_classes:
            raise DWNError(f"The last layer's {width} outputs cannot be split into {num_classes} equal GroupSum "
                           f"groups; make model.layers[-1].out_features a multiple of {num_classes}.")
        return GroupSum(num_classes, tau=cfg.tau)
    if cfg.kind == "reduction":
        if not 1 <= cfg.n <= MAX_N:
            raise DWNError(f"model.head.n must be between 1 and {MAX_N}; got {cfg.n}.")
        return ReductionHead(width, num_classes, n=cfg.n, tau=cfg.tau)
    raise DWNError(f"model.head.kind={cfg.kind!r} is unknown; expected group_sum or reduction.")


def count_luts(model: nn.Module) -> int:
    """LUTs in the model, reduction pyramids included."""
    return sum(m.output_size for m in model.modules() if isinstance(m, LUTLayer))


def input_width(feature_shape, num_bits: int) -> int:
    return math.prod(feature_shape) * num_bits
