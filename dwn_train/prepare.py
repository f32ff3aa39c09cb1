"""Data preparation, shared by training and evaluation: load a data set, split off validation,
fit the thermometer on the training split (or take a restored one), encode every split onto the
device as uint8 bits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from .data import load_dataset
from .errors import DWNError, is_int
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
    fingerprint: dict | None = None  # what identifies the data (see `fingerprint`); None where only some splits were prepared

    def describe(self) -> dict:
        """What a checkpoint records about the data (its `data` entry)."""
        return {"num_classes": self.num_classes, "feature_shape": list(self.feature_shape),
                "in_features": self.in_features, "class_names": list(self.class_names),
                **({"fingerprint": self.fingerprint} if self.fingerprint is not None else {})}


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


def _sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """Hex sha256 of features (S, *F) and labels (S,): their shape, then their bytes as loaded."""
    digest = hashlib.sha256(repr((tuple(x.shape), str(x.dtype), str(y.dtype))).encode())
    for tensor in (x, y):
        digest.update(tensor.detach().cpu().contiguous().numpy())  # no copy: hashlib reads the buffer
    return digest.hexdigest()


def fingerprint(data, num_val: int, parts=("train", "test")) -> dict:
    """What identifies the data a run was trained on (a checkpoint's data["fingerprint"]): rows per
    split, the class labels, and a sha256 of each part in `parts` as the loader returned it.

    "train_sha256" is the training split before validation is split off (x_train, y_train of the
    loader): the validation rows are a seeded draw from it (trainer.val_fraction, trainer.seed,
    which a resume checks as settings), so one hash covers both, the same whatever val_fraction is,
    and is computed before anything is split or encoded. "test_sha256" is the test split. Hashing
    reads each tensor's bytes once (MNIST's 188 MB of float32 features: a fraction of a second)."""
    found = {"rows": {"train": len(data.x_train) - num_val, "val": num_val, "test": len(data.x_test)},
             "labels": list(data.class_names)}
    for part in parts:
        found[f"{part}_sha256"] = _sha256(*((data.x_train, data.y_train) if part == "train" else
                                             (data.x_test, data.y_test)))
    return found


def _differences(recorded: dict, found: dict, parts) -> list[str]:
    """What differs between a recorded fingerprint and the data's, in the splits `parts`, as phrases;
    entries the record lacks are not compared (it may come from an older dwn-train)."""
    rows_then, rows_now = recorded.get("rows"), found["rows"]
    said = []
    for part in parts:
        keys = ("train", "val") if part == "train" else ("test",)
        name = "the training split (validation included)" if part == "train" else "the test split"
        now = sum(rows_now[k] for k in keys)
        then = sum(rows_then[k] for k in keys) if isinstance(rows_then, dict) and all(
            is_int(rows_then.get(k)) for k in keys) else None
        if then is not None and then != now:
            said.append(f"{name} has {now} rows where it had {then}")
        elif recorded.get(f"{part}_sha256") not in (None, found[f"{part}_sha256"]):
            said.append(f"{name} holds other values in its {now} rows")
    return said


def _check_same_data(data, expect: tuple, num_val: int, only, found: dict | None, on_other_data) -> None:
    """Refuse data that does not fit the checkpoint (`expect` = its data entry, its name): another
    feature shape, number of classes or class labels. Other rows or values in the splits used
    (all; dwn-eval: the one it scores) are refused too, unless `on_other_data` takes the sentence
    (without its full stop).
    `found`: the data's whole fingerprint, if computed already."""
    stored, where = expect
    have = (list(data.feature_shape), data.num_classes)
    want = (list(stored["feature_shape"]), int(stored["num_classes"]))
    if have != want:
        raise DWNError(f"{where} was trained on data with feature shape {tuple(want[0])} and {want[1]} classes, but "
                       f"dataset {data.name!r} has feature shape {tuple(have[0])} and {have[1]} classes: point the "
                       "dataset options at the data it was trained on.")
    recorded = stored.get("fingerprint")
    if not isinstance(recorded, dict):  # written before fingerprints: nothing more to compare
        return
    parts = ("train", "test") if only is None else tuple(dict.fromkeys(
        "test" if name == "test" else "train" for name in only))  # val is drawn from the training split
    found = found or fingerprint(data, num_val, parts)
    other = f"{where} comes from a run on other data than dataset {data.name!r} holds now"
    fix = "point the dataset options at the data it was trained on" + (", or start a new run" if only is None else "")
    labels = recorded.get("labels")
    if isinstance(labels, list) and labels != found["labels"]:
        shown = lambda names: ", ".join(map(repr, names[:12])) + (", ..." if len(names) > 12 else "")
        raise DWNError(f"{other}: its class labels are {shown(found['labels'])} where they were {shown(labels)}; "
                       f"{fix}.")
    said = _differences(recorded, found, parts)
    if said and on_other_data is None:
        raise DWNError(f"{other}: {' and '.join(said)}; {fix}.")
    if said:
        on_other_data(f"{other}: {' and '.join(said)}")


def prepare_data(cfg, device, encoder=None, expect=None, only=None, on_other_data=None) -> Prepared:
    """Load, split off validation (trainer.val_fraction, seeded by trainer.seed), fit a new encoder
    on train only unless a fitted `encoder` is given, and encode every split (or the names in
    `only`: dwn-eval scores one; `raw` always has them all). `expect` = (a checkpoint's `data`
    entry, what to call it): the loaded data must have its feature shape, classes and, where the
    checkpoint recorded a fingerprint, its rows and values (checked before anything is encoded);
    data with other rows or values is refused unless `on_other_data` is given the sentence to say
    instead (dwn-eval: scoring other data may be deliberate)."""
    data = load_dataset(cfg.dataset)
    frac = cfg.trainer.val_fraction
    num_val = int(len(data.x_train) * frac)
    found = fingerprint(data, num_val) if only is None else None  # what this run's checkpoints record
    if expect is not None:
        _check_same_data(data, expect, num_val, only, found, on_other_data)
    x_train, y_train = data.x_train, data.y_train
    splits_raw = {"test": (data.x_test, data.y_test)}
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
                    input_width(data.feature_shape, encoder.num_bits), splits_raw, data.class_names, images, found)
