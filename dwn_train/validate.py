"""Validation per command, once, first: every value a user gives is checked here before any data
loads or any file is written, and the first problem raises a DWNError that names the key.

    check_composed(cfg, schema, name)  any command: every ${...} resolves, no ??? is left, no key
                                       the schema lacks (Hydra's `+key=value` adds them silently)
    check_train(cfg)                   dwn-train: every kind against its table, every number
                                       against its range, the settings that depend on each other
    check_eval(cfg)                    dwn-eval
    check_export(cfg)                  dwn-export, the FPGA tools included

Hydra has already checked keys and types against the schemas (dwn_train/config.py). The builders
after it (data.py, model.py, optim.py, train.py) trust what passed here. The layers' own arguments
are checked by LUTLayer itself (`check_lut_args`), which model.check_model calls under the config
key; trainer.cuda_graphs is decided by graphs.captures, which the trainer calls too.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import unknown_keys
from .data import IMAGE_KINDS, LOADERS
from .errors import DWNError, is_number, os_reason
from .graphs import captures, setting
from .lut import BACKENDS
from .model import check_encoding, check_model
from .optim import OPTIMIZERS, SCHEDULERS
from .prepare import resolve_device

STRATEGIES = ("single", "ddp")
MAX_SEED = 2**32 - 1  # what every generator the seeds reach takes (numpy's and scikit-learn's range)
LOGGERS = ("none", "tensorboard")
# the monitor keys best.pt may be chosen on; the test split never chooses
MONITORS = ("train_loss", "train_acc", "val_acc")
SPLITS = ("test", "val", "train")  # dwn-eval split=
ENGINES = ("float", "packed")  # dwn-eval engine=
FORMATS = ("json", "c", "verilog")  # dwn-export format=
SHELLS = ("none", "serial")  # dwn-export shell=


def check_composed(cfg, schema, name: str) -> None:
    """What any command's composed config must be before its work starts (`name`: the command)."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "a setting"
        raise DWNError(f"{key} cannot be resolved: {os_reason(exc).rstrip('.')}; give it a value, or an "
                       "interpolation of an existing setting of the right type.") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise DWNError(f"no value for {', '.join(missing)}; pass it on the command line, e.g. {missing[0]}=...")
    unknown = unknown_keys(cfg, schema)
    if unknown:
        raise DWNError(f"unknown key {', '.join(unknown)}: {name} has no such setting (misspelt? "
                       f"`{name} --help` lists every key).")


def check_train(cfg) -> None:
    """Raise a DWNError naming the first bad value of `cfg` (the composed train config)."""
    _dataset(cfg.dataset)
    check_encoding(cfg.encoding)
    check_model(cfg.model)
    _optimizer(cfg.optimizer)
    _scheduler(cfg.scheduler)
    _trainer(cfg.trainer)
    _one_of("logger.kind", cfg.logger.kind, LOGGERS)
    if cfg.logger.kind == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise DWNError("logger=tensorboard needs the tensorboard package: pip install tensorboard.")
    _device(cfg.trainer, cfg.optimizer.kind)


def _device(t, optimizer_kind: str) -> None:
    """What the machine must have for the trainer settings: the device, the CUDA kernels for
    backend=cuda, and a step that can be captured for cuda_graphs=true."""
    device = resolve_device(t.device)
    if t.backend == "cuda":
        from . import kernels

        if device.type != "cuda" or not kernels.available():
            raise DWNError("trainer.backend=cuda needs trainer.device=cuda and CuPy "
                           "(pip install 'dwn-train[cuda]'); use backend=auto or torch.")
    captures(t.cuda_graphs, device, t.strategy, optimizer_kind)


def check_eval(cfg) -> None:
    """dwn-eval's settings (the checkpoint itself is checked as it is read)."""
    _one_of("split", cfg.split, SPLITS)
    _positive("batch_size", cfg.batch_size)
    if cfg.threads < 0:
        raise DWNError(f"threads must be 0 (every core) or a positive integer; got {cfg.threads}.")
    _one_of("engine", cfg.engine, ENGINES)
    resolve_device(cfg.device)


def check_export(cfg) -> None:
    """dwn-export's settings, and the FPGA tools that fpga= needs (before any work)."""
    from .export import fpga
    from .export.verilog import PIPELINES

    _one_of("format", cfg.format, FORMATS)
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise DWNError(f"out={cfg.out} is a file; give a folder for the exported files.")
    if cfg.vectors is not None and cfg.vectors < 1:
        raise DWNError(f"vectors must be a positive integer; got {cfg.vectors}.")
    if cfg.fpga not in fpga.FPGAS or cfg.shell not in SHELLS:
        raise DWNError(f"fpga must be one of {', '.join(fpga.FPGAS)} and shell {' or '.join(SHELLS)}; got "
                       f"fpga={cfg.fpga!r}, shell={cfg.shell!r}.")
    _one_of("pipeline", cfg.pipeline, PIPELINES)
    if (cfg.fpga != "none" or cfg.shell != "none") and cfg.format != "verilog":
        raise DWNError(f"fpga= and shell= work on the Verilog export: add format=verilog (got format={cfg.format}).")
    if not is_number(cfg.fpga_timeout) or cfg.fpga_timeout <= 0:
        raise DWNError(f"fpga_timeout must be a positive number of seconds; got {cfg.fpga_timeout!r}.")
    fpga.check(cfg.fpga, cfg.fpga_device)
    if cfg.yosys and cfg.format == "verilog":  # asked for: a missing yosys is said before any work
        fpga.need("yosys", "yosys", "yosys=true")


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


def _trainer(t) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
        _positive(f"trainer.{key}", getattr(t, key))
    _seed("trainer.seed", t.seed)
    if t.threads is not None:
        _positive("trainer.threads", t.threads)
    if not 0.0 <= t.val_fraction < 1.0:
        raise DWNError(f"trainer.val_fraction must lie in [0, 1); got {t.val_fraction}.")
    _one_of("trainer.backend", t.backend, BACKENDS)
    _one_of("trainer.strategy", t.strategy, STRATEGIES)
    setting(t.cuda_graphs)
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
