"""Data sets: `dataset.kind` -> a loader returning train/test tensors.

Every loader returns a `Splits` of float32 features (samples, *feature_shape) and int64 labels in
0..C-1. Nothing here encodes or batches: the trainer fits the thermometer on the training split.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DWNError, first_line


@dataclass
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str
    class_names: list | None = None  # the original label of each class index, as text
    image_shape: tuple | None = None  # image data sets: (H, W) or (H, W, C) of each flattened sample

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(cfg) -> Splits:
    """Load the data set that `cfg` (the `dataset` config group, checked by dwn_train/validate.py)
    names, and check what came."""
    if cfg.kind not in LOADERS:  # validate.py says so first for a command; a library caller hears it here
        raise DWNError(f"dataset.kind must be one of {', '.join(sorted(LOADERS))}; got {cfg.kind!r}.")
    splits = LOADERS[cfg.kind](cfg)
    for name, x in (("training", splits.x_train), ("test", splits.x_test)):
        if len(x) == 0:
            raise DWNError(f"The {name} split of dataset {splits.name!r} is empty.")
        if not torch.isfinite(x).all():
            raise DWNError(f"The {name} split of dataset {splits.name!r} contains NaN or infinite values; "
                           "clean or impute the data first.")
    present = torch.unique(splits.y_train)
    if len(present) < 2:
        label = splits.class_names[int(present[0])] if splits.class_names else int(present[0])
        raise DWNError(f"The training split of dataset {splits.name!r} holds a single class ({label!r}); a "
                       "classifier needs at least two classes to learn from.")
    if splits.class_names is None:
        splits.class_names = [str(c) for c in range(splits.num_classes)]
    return splits


def _from_numpy(name, x_train, y_train, x_test, y_test) -> Splits:
    labels, encoded = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)
    encoded = encoded.reshape(-1)
    return Splits(torch.as_tensor(np.asarray(x_train, dtype=np.float32)),
                  torch.as_tensor(encoded[: len(y_train)], dtype=torch.int64),
                  torch.as_tensor(np.asarray(x_test, dtype=np.float32)),
                  torch.as_tensor(encoded[len(y_train):], dtype=torch.int64),
                  num_classes=len(labels), name=name, class_names=[str(label) for label in labels])


def _split(name, x, y, cfg) -> Splits:
    from sklearn.model_selection import train_test_split

    test = int(np.ceil(len(x) * cfg.test_fraction))
    if len(x) - test < 1 or test < 1:
        raise DWNError(f"dataset {name!r} has {len(x)} sample(s): too few to split into training and test parts "
                       f"with dataset.test_fraction={cfg.test_fraction}; give more rows or a dataset.test_path.")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=cfg.test_fraction,
                                                        random_state=cfg.split_seed)
    return _from_numpy(name, x_train, y_train, x_test, y_test)


def _torchvision(cfg) -> Splits:
    names = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
    name = names[cfg.kind]
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise DWNError(f"dataset={cfg.kind} needs torchvision: pip install 'dwn-train[vision]'.") from exc
    cls = getattr(tvd, name)
    try:
        parts = [cls(root=cfg.root, train=train, download=cfg.download) for train in (True, False)]
    except Exception as exc:  # torchvision raises RuntimeError when absent, URLError/OSError offline
        if cfg.download:
            raise DWNError(f"{name} could not be downloaded into dataset.root={cfg.root!r} ({first_line(exc)}); "
                           f"without a network, copy {name}/raw from a machine that has it into that folder (and "
                           "drop dataset.download), or try the bundled dataset=digits.") from exc
        raise DWNError(f"{name} was not found under dataset.root={cfg.root!r} (expected {Path(cfg.root) / name}); "
                       "point dataset.root at a local copy, set dataset.download=true to fetch it, or try the tool "
                       "at once on the bundled dataset=digits model=digits_small.") from exc
    tensors = []
    for part in parts:
        data = torch.as_tensor(np.asarray(part.data)).float().flatten(1)
        tensors += [data, torch.as_tensor(np.asarray(part.targets), dtype=torch.int64)]
    return Splits(*tensors, num_classes=len(parts[0].classes), name=cfg.kind, class_names=list(parts[0].classes),
                  image_shape=tuple(np.asarray(parts[0].data).shape[1:]))


def _sklearn_bundled(cfg) -> Splits:
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[cfg.kind]
    x, y = loader(return_X_y=True)
    return _split(cfg.kind, x, y, cfg)


def _openml(cfg) -> Splits:
    from sklearn.datasets import fetch_openml

    try:
        x, y = fetch_openml(data_id=int(cfg.data_id), data_home=cfg.data_home, return_X_y=True, as_frame=False,
                            parser="auto")
    except Exception as exc:  # network, cache or format: the user can fix all of them
        raise DWNError(f"OpenML data set {cfg.data_id} could not be loaded into dataset.data_home="
                       f"{cfg.data_home!r} ({type(exc).__name__}: {exc}); check the id and the network, "
                       "or copy a cached download there.") from exc
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DWNError(f"OpenML data set {cfg.data_id} has non-numeric feature columns.") from exc
    return _split(f"openml-{cfg.data_id}", x, np.asarray(y), cfg)


def _read_csv(path_value, target: str, what: str):
    path = Path(path_value)
    if not path.is_file():
        raise DWNError(f"{what}={str(path)!r} does not exist or is not a file.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DWNError(f"{what}={str(path)!r} could not be read as CSV ({exc}).") from exc
    if len(rows) < 2:
        raise DWNError(f"{what}={str(path)!r} needs a header row and at least one data row.")
    header, body = rows[0], rows[1:]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DWNError(f"{what}={str(path)!r} names the column(s) {', '.join(map(repr, twice))} more than once; "
                       "give every column its own name.")
    if target not in header:
        raise DWNError(f"dataset.target={target!r} is not a column of {path}; columns are {', '.join(header)}.")
    column = header.index(target)
    features = [c for c in range(len(header)) if c != column]
    if not features:
        raise DWNError(f"{what}={str(path)!r} has no feature columns: its only column is dataset.target={target!r}.")
    values = np.empty((len(body), len(features)), dtype=np.float64)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise DWNError(f"{path} row {r + 2} has {len(row)} fields; the header has {len(header)}.")
        for c, source in enumerate(features):
            try:
                values[r, c] = float(row[source]) if row[source].strip() else np.nan
            except ValueError:
                raise DWNError(f"{path} row {r + 2}, column {header[source]!r}: {row[source]!r} is not a number.") from None
    if not np.isfinite(values).all():
        raise DWNError(f"{path} has empty, NaN or infinite feature values; clean or impute the data first.")
    if (np.abs(values) > FLOAT32_MAX).any():
        raise DWNError(f"{path} has feature values beyond what float32 holds (|x| > {FLOAT32_MAX:.3g}); rescale them.")
    return values, np.asarray([row[column] for row in body]), [header[c] for c in features]


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _label_key(text: str):
    """What a CSV label means: its value where it reads as a finite number (so `2`, `2.0` and ` 2 `
    are one class), else its text as written (`cat` and ` cat` stay two)."""
    try:
        value = float(text) if "_" not in text else None  # float() would read 1_0 as 10
    except ValueError:
        value = None
    return value if value is not None and math.isfinite(value) else text


def _spellings(labels: np.ndarray) -> dict:
    """label key -> the first spelling of it in `labels`: the name of its class."""
    first = {}
    for text in dict.fromkeys(labels.tolist()):  # the distinct labels, in file order
        first.setdefault(_label_key(text), text)
    return first


def _respelled(labels: np.ndarray, first: dict) -> np.ndarray:
    """`labels` with every spelling of a class replaced by its name (first[key])."""
    name = {text: first[_label_key(text)] for text in set(labels.tolist())}
    return np.asarray([name[text] for text in labels.tolist()])


def _unseen_labels(labels: np.ndarray, first: dict, path) -> None:
    """Refuse test labels that the training file never has: the model has no class for them."""
    unseen = [text for text in dict.fromkeys(labels.tolist()) if _label_key(text) not in first]
    if unseen:
        shown = ", ".join(map(repr, unseen[:5])) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
        raise DWNError(f"dataset.test_path={str(path)!r} has the label(s) {shown}, which the training file "
                       "(dataset.path) never has: a model scores only the classes it was trained on, so drop those "
                       "rows or add examples of them to the training file.")


def _csv(cfg) -> Splits:
    """dataset=csv: the file in dataset.path, split by test_fraction, or with dataset.test_path as the
    test split; that file's columns are matched to the training file's by name, in any order.

    Labels are matched by value (_label_key): every spelling of a class is read as its first
    spelling in dataset.path, which names it; class indices follow the sorted names, as they
    always have (so checkpoints keep their class order)."""
    x, y, names = _read_csv(cfg.path, cfg.target, "dataset.path")
    classes = _spellings(y)
    y = _respelled(y, classes)
    if cfg.test_path:
        x_test, y_test, test_names = _read_csv(cfg.test_path, cfg.target, "dataset.test_path")
        _unseen_labels(y_test, classes, cfg.test_path)
        y_test = _respelled(y_test, classes)
        missing, extra = [n for n in names if n not in test_names], [n for n in test_names if n not in names]
        if missing or extra:
            raise DWNError(f"dataset.test_path's feature columns are not dataset.path's: missing "
                           f"{', '.join(missing) or 'none'}; extra {', '.join(extra) or 'none'}.")
        x_test = x_test[:, [test_names.index(n) for n in names]]  # the training file's column order
        return _from_numpy(Path(cfg.path).stem, x, y, x_test, y_test)
    return _split(Path(cfg.path).stem, x, y, cfg)


def _synthetic(cfg) -> Splits:
    """Gaussian clusters around random centres, deterministic in split_seed."""
    rng = np.random.default_rng(cfg.split_seed)
    centres = rng.normal(scale=2.0, size=(cfg.num_classes, cfg.num_features))
    y = rng.integers(0, cfg.num_classes, size=cfg.num_samples)
    x = centres[y] + rng.normal(size=(cfg.num_samples, cfg.num_features))
    return _split("synthetic", x, y, cfg)


IMAGE_KINDS = ("mnist", "fashion_mnist", "cifar10")  # the loaders that give image_shape (augmentation)

LOADERS = {
    "mnist": _torchvision, "fashion_mnist": _torchvision, "cifar10": _torchvision,
    "digits": _sklearn_bundled, "breast_cancer": _sklearn_bundled,
    "jsc": _openml, "openml": _openml, "csv": _csv, "synthetic": _synthetic,
}
