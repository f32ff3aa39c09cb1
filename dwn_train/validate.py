"""One validation pass over a composed `dwn-train` config, before any data is loaded.

Hydra has already checked keys and types against the schemas (dwn_train/config.py); this checks
values: every kind against its table, every number against its range, and the settings that
depend on each other. The first problem raises a DWNError that names the key. The builders after
it (data.py, model.py, optim.py, train.py) trust what passed here; trainer.device is checked
by prepare.resolve_device, which dwn-eval shares; the layers' own arguments are
checked by LUTLayer itself (`check_lut_args`), which model.check_model calls under the config key.
"""

from __future__ import annotations

import math

from .data import IMAGE_KINDS, LOADERS
from .errors import DWNError
from .lut import BACKENDS
from .model import check_encoding, check_model
from .optim import CAPTURABLE, OPTIMIZERS, SCHEDULERS

STRATEGIES = ("single", "ddp")
MAX_SEED = 2**32 - 1  # what every generator the seeds reach takes (numpy's and scikit-learn's range)
LOGGERS = ("none", "tensorboard")
# the monitor keys best.pt may be chosen on; the test split never chooses
MONITORS = ("train_loss", "train_acc", "val_acc")


def validate_train_config(cfg) -> None:
    """Raise a DWNError naming the first bad value of `cfg` (the composed train config)."""
    _dataset(cfg.dataset)
    check_encoding(cfg.encoding)
    check_model(cfg.model)
    _optimizer(cfg.optimizer)
    _scheduler(cfg.scheduler)
    _trainer(cfg.trainer, cfg.optimizer.kind)
    _one_of("logger.kind", cfg.logger.kind, LOGGERS)


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise DWNError(f"{key} must be one of {', '.join(allowed)}; got {value!r}.")


def _positive(key: str, value) -> None:
    if value is None or value < 1:
        raise DWNError(f"{key} must be a positive integer; got {value}.")


def _finite(key: str, value, least: float = 0.0, above: bool = False) -> None:
    """A finite number >= least (> least with above=True)."""
    if not (math.isfinite(value) and (value > least if above else value >= least)):
        raise DWNError(f"{key} must be a finite number {'>' if above else '>='} {least:g}; got {value}.")


def _seed(key: str, value) -> None:
    if not 0 <= value <= MAX_SEED:
        raise DWNError(f"{key} must be an integer in 0..{MAX_SEED} (2^32 - 1); got {value}.")


def _optimizer(o) -> None:
    _one_of("optimizer.kind", o.kind, OPTIMIZERS)
    _finite("optimizer.lr", o.lr, above=True)
    _finite("optimizer.weight_decay", o.weight_decay)
    if o.kind == "sgd":
        _finite("optimizer.momentum", o.momentum)
    else:
        betas = list(o.betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise DWNError(f"optimizer.betas must be two numbers in [0, 1), e.g. [0.9,0.999]; got {betas}.")


def _scheduler(s) -> None:
    _one_of("scheduler.kind", s.kind, SCHEDULERS)
    if s.kind == "step":
        _positive("scheduler.step_size", s.step_size)
    if s.kind in ("step", "multistep"):
        _finite("scheduler.gamma", s.gamma, above=True)
    if s.kind == "multistep" and any(m < 1 for m in s.milestones):
        raise DWNError(f"scheduler.milestones must be epochs >= 1; got {list(s.milestones)}.")
    if s.kind == "cosine":
        _finite("scheduler.min_lr", s.min_lr)


def _dataset(d) -> None:
    _one_of("dataset.kind", d.kind, sorted(LOADERS))
    _seed("dataset.split_seed", d.split_seed)
    if not 0.0 < d.test_fraction < 1.0:
        raise DWNError(f"dataset.test_fraction must lie strictly between 0 and 1; got {d.test_fraction}.")
    if d.kind == "csv" and not (d.path and d.target):
        raise DWNError("dataset=csv needs dataset.path (the file) and dataset.target (the label column).")
    if d.kind == "openml" and d.data_id is None:
        raise DWNError("dataset.data_id is required for dataset=openml (e.g. dataset.data_id=42468).")
    if d.augment.shift < 0:
        raise DWNError(f"dataset.augment.shift must be >= 0 pixels; got {d.augment.shift}.")
    if d.augment.shift and d.kind not in IMAGE_KINDS:
        raise DWNError(f"dataset.augment works on images ({', '.join(IMAGE_KINDS)}); dataset={d.kind} has none: "
                       "drop dataset.augment.shift.")
    if d.kind == "synthetic":
        for key, least in (("num_samples", 2), ("num_features", 1), ("num_classes", 2)):
            if getattr(d, key) < least:
                raise DWNError(f"dataset.{key} must be at least {least}; got {getattr(d, key)}.")


def _trainer(t, optimizer_kind: str) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
        _positive(f"trainer.{key}", getattr(t, key))
    _seed("trainer.seed", t.seed)
    if t.threads is not None:
        _positive("trainer.threads", t.threads)
    if not 0.0 <= t.val_fraction < 1.0:
        raise DWNError(f"trainer.val_fraction must lie in [0, 1); got {t.val_fraction}.")
    _one_of("trainer.backend", t.backend, BACKENDS)
    _one_of("trainer.strategy", t.strategy, STRATEGIES)
    if not (t.cuda_graphs is True or t.cuda_graphs is False or t.cuda_graphs == "auto"):
        raise DWNError(f"trainer.cuda_graphs must be auto, true or false; got {t.cuda_graphs!r}.")
    if t.cuda_graphs is True and (t.device != "cuda" or t.strategy != "single" or optimizer_kind not in CAPTURABLE):
        raise DWNError("trainer.cuda_graphs=true needs trainer.device=cuda, trainer.strategy=single and "
                       f"optimizer {' or '.join(CAPTURABLE)} (auto, the default, captures where these hold).")
    monitor = t.checkpoint.monitor
    if monitor != "auto" and monitor not in MONITORS:
        raise DWNError(f"trainer.checkpoint.monitor must be auto or one of {', '.join(MONITORS)} (the test split "
                       f"never chooses); got {monitor!r}.")
    if monitor == "val_acc" and t.val_fraction == 0:
        raise DWNError("trainer.checkpoint.monitor=val_acc needs a validation split: set trainer.val_fraction > 0.")


def monitor_key(t) -> str:
    """The metric best.pt is chosen on: trainer.checkpoint.monitor, where auto means val_acc with a
    validation split and train_acc without."""
    if t.checkpoint.monitor == "auto":
        return "val_acc" if t.val_fraction > 0 else "train_acc"
    return t.checkpoint.monitor
