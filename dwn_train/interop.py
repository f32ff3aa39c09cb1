"""Models trained with torch-dwn, brought into dwn-train (to freeze, export, evaluate).

torch-dwn's modules keep their state under the names this package also uses: in an
nn.Sequential, LUT layer k holds `k.luts` (N, 2**n) and either `k.mapping` (N, n) integer input
indices or, for a learnable mapping, `k.mapping.weights` (I, N * n) (plus a constant
`k._LUTLayer__dummy_mapping`, not needed); GroupSum has no state (its k is the number of classes,
its tau does not change the class). The thermometer is not a module there: pass its `thresholds`,
(F, z) when fitted feature-wise, else (z,) or (1, z). The address bit order is the same (bit l of
LUT j's address is its input mapping[j, l], least significant first), so the tables carry over
unchanged.

    encoder, model = from_torch_dwn(torch_dwn_model_or_state_dict, thermometer.thresholds, num_classes=10)
    net = freeze(model, encoder, input_format(model, encoder, x_train))  # then C, Verilog, packed ...
    to_checkpoint(path, encoder, model, dataset={"kind": "mnist", "root": ...})  # for dwn-export/dwn-eval
"""

from __future__ import annotations

import math
import re

import torch
from omegaconf import OmegaConf
from torch import nn

from .errors import DWNError
from .layers import GroupSum, LUTLayer
from .thermometer import Thermometer

_LUTS = re.compile(r"^(\d+)\.luts$")


def from_torch_dwn(model, thresholds, num_classes: int, tau: float = 1.0, num_features: int | None = None):
    """(encoder, nn.Sequential of our LUTLayers and a GroupSum) holding a torch-dwn model's state.
    num_features: needed only for a global thermometer (thresholds (z,) or (1, z)), whose
    thresholds do not say how many features share them."""
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    encoder = _encoder(torch.as_tensor(thresholds, dtype=torch.float32))
    if encoder.feature_wise:
        width = encoder.thresholds.numel()
    elif num_features is None:
        raise DWNError("a global thermometer's thresholds do not say how many features share them: pass "
                       "num_features.")
    else:
        width = num_features * encoder.num_bits
    layers = []
    for index in sorted(int(m.group(1)) for m in map(_LUTS.match, state) if m):
        luts = state[f"{index}.luts"]
        num, size = luts.shape
        n = size.bit_length() - 1
        if size != 1 << n:
            raise DWNError(f"torch-dwn layer {index}: luts has {size} entries per table, not a power of two.")
        learnable = f"{index}.mapping.weights" in state
        if not learnable and f"{index}.mapping" not in state:
            raise DWNError(f"torch-dwn layer {index} has luts but neither mapping nor mapping.weights.")
        layer = LUTLayer(width, num, n=n, mapping="learnable" if learnable else torch.as_tensor(state[f"{index}.mapping"]))
        own = {"luts": luts}
        if learnable:
            own["mapping.weights"] = state[f"{index}.mapping.weights"]
        try:
            layer.load_state_dict(own, strict=False)
        except RuntimeError as exc:
            raise DWNError(f"torch-dwn layer {index} does not fit a layer of {width} inputs: "
                           f"{str(exc).splitlines()[0]}") from exc
        layers.append(layer)
        width = num
    if not layers:
        raise DWNError("no torch-dwn LUT layer found: expected keys like '0.luts' (an nn.Sequential's state_dict).")
    if width % num_classes:
        raise DWNError(f"the last layer's {width} outputs cannot be split into {num_classes} GroupSum groups.")
    return encoder, nn.Sequential(*layers, GroupSum(num_classes, tau=tau)).eval()


def _encoder(thresholds: torch.Tensor) -> Thermometer:
    """A fitted thermometer with these thresholds: (F, z) feature-wise, (z,) or (1, z) global."""
    if thresholds.dim() == 2 and thresholds.shape[0] > 1:
        encoder = Thermometer(thresholds.shape[1], feature_wise=True)
    elif thresholds.dim() in (1, 2):
        thresholds = thresholds.reshape(-1)
        encoder = Thermometer(len(thresholds), feature_wise=False)
    else:
        raise DWNError(f"thresholds must be (features, bits) or (bits,); got shape {tuple(thresholds.shape)}.")
    encoder.load_state_dict({"thresholds": thresholds})
    return encoder


def to_checkpoint(path, encoder: Thermometer, model: nn.Sequential, dataset: dict, feature_shape=None) -> None:
    """Write a dwn-train checkpoint of an imported model, so that dwn-export and dwn-eval take it.
    `dataset`: the `dataset` config the model was trained on (e.g. {"kind": "csv", "path": ...,
    "target": ...}); feature_shape defaults to the thresholds' features."""
    from .checkpoint import make_payload, save_checkpoint
    from .config import stored_config

    layers = [m for m in model if isinstance(m, LUTLayer)]
    head = model[-1]
    shape = list(feature_shape or ([encoder.thresholds.shape[0]] if encoder.feature_wise else []))
    if not shape:
        raise DWNError("a global thermometer does not say how many features there are: pass feature_shape.")
    plain = {"dataset": dict(dataset), "encoding": {"kind": "uniform", "num_bits": encoder.num_bits,
                                                    "feature_wise": encoder.feature_wise},
             "model": {"layers": [{"out_features": m.out_features, "n": m.n,
                                   "mapping": "learnable" if m.learnable else "random"} for m in layers],
                       "head": {"kind": "group_sum", "tau": head.tau}}}
    config = OmegaConf.to_container(stored_config(plain), resolve=True)
    data = {"num_classes": head.k, "feature_shape": shape, "in_features": layers[0].in_features,
            "class_names": [str(c) for c in range(head.k)]}
    if math.prod(shape) * encoder.num_bits != layers[0].in_features:
        raise DWNError(f"feature shape {tuple(shape)} with {encoder.num_bits} bits gives "
                       f"{math.prod(shape) * encoder.num_bits} inputs, but the first layer reads {layers[0].in_features}.")
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(make_payload(model=model, encoder=encoder, optimizer=optimizer, scheduler=None, epoch=0, step=0,
                                 best_metric=None, monitor="imported", config=config, data=data), path)
