"""Data preparation, shared by training and evaluation: load a data set, split off validation,
fit the thermometer on the training split (or take a restored one), encode every split onto the
device as uint8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .data import load_dataset
from .errors import DWNError
from .model import build_encoder, input_width
from .resources import check_memory


@dataclass
class Prepared:
    """Encoded splits on the device: name -> (bits uint8 (S, W), labels int64 (S,)); raw: the
    same splits' features before encoding, on the CPU."""
    splits: dict
    encoder: nn.Module
    num_classes: int
    feature_shape: tuple
    in_features: int
    raw: dict
    class_names: list
    train_images: torch.Tensor | None = None  # augmentation: the training images (S, H, W[, C]) uint8 on the device

    def describe(self) -> dict:
        """What a checkpoint records about the data (its `data` entry)."""
        return {"num_classes": self.num_classes, "feature_shape": list(self.feature_shape),
                "in_features": self.in_features, "class_names": list(self.class_names)}


def resolve_device(name: str) -> torch.device:
    """auto | cpu | cuda -> a torch device; cuda without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise DWNError(f"device must be auto, cpu or cuda; got {name!r}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise DWNError("device=cuda was asked for but no CUDA device is available; use device=cpu or auto.")
    return torch.device(name)


def encode(encoder, x: torch.Tensor, device, chunk: int = 8192) -> torch.Tensor:
    """Thermometer bits of x (S, *F) as uint8 (S, F * z), chunked to bound memory."""
    out = torch.empty(len(x), input_width(x.shape[1:], encoder.num_bits), dtype=torch.uint8)
    for start in range(0, len(x), chunk):
        out[start:start + chunk] = encoder.binarize(x[start:start + chunk]).flatten(1).to(torch.uint8)
    return out.to(device)


def _check_same_data(data, stored: dict, where: str) -> None:
    have = (list(data.feature_shape), data.num_classes)
    want = (list(stored["feature_shape"]), int(stored["num_classes"]))
    if have != want:
        raise DWNError(f"{where} was trained on data with feature shape {tuple(want[0])} and {want[1]} classes, but "
                       f"dataset {data.name!r} has feature shape {tuple(have[0])} and {have[1]} classes: point the "
                       "dataset options at the data it was trained on.")


def prepare_data(cfg, device, encoder=None, expect=None, only=None) -> Prepared:
    """Load, split off validation (trainer.val_fraction, seeded by trainer.seed), fit a new encoder
    on train only unless a fitted `encoder` is given, and encode every split (or the names in
    `only`: dwn-eval scores one; `raw` always has them all). `expect` = (a checkpoint's `data`
    entry, what to call it): the loaded data must have its feature shape and number of classes
    (checked before anything is encoded)."""
    data = load_dataset(cfg.dataset)
    if expect is not None:
        _check_same_data(data, *expect)
    frac = cfg.trainer.val_fraction
    x_train, y_train = data.x_train, data.y_train
    splits_raw = {"test": (data.x_test, data.y_test)}
    num_val = int(len(x_train) * frac)
    if frac and not num_val:
        raise DWNError(f"trainer.val_fraction={frac} leaves no validation sample of the {len(x_train)} training "
                       "samples; raise it or set it to 0.")
    if num_val:
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.trainer.seed))
        splits_raw["val"] = (x_train[order[:num_val]], y_train[order[:num_val]])
        x_train, y_train = x_train[order[num_val:]], y_train[order[num_val:]]
    splits_raw["train"] = (x_train, y_train)
    samples = sum(len(x) for name, (x, _) in splits_raw.items() if only is None or name in only)
    check_memory(samples * x_train[0].numel() * cfg.encoding.num_bits * 1.0, "the encoded data (one byte per bit)",
                 "encoding.num_bits")
    if encoder is None:
        encoder = build_encoder(cfg.encoding).fit(x_train)
    splits = {name: (encode(encoder, x, device), y.to(device)) for name, (x, y) in splits_raw.items()
              if only is None or name in only}
    images = None
    if cfg.dataset.augment.shift and "train" in splits:  # the raw images travel too, moved and encoded per batch
        images = x_train.view(-1, *data.image_shape).to(torch.uint8).to(device)
        encoder.to(device)
    return Prepared(splits, encoder, data.num_classes, data.feature_shape,
                    input_width(data.feature_shape, encoder.num_bits), splits_raw, data.class_names, images)
