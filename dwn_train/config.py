"""Typed schemas of the configuration, registered in Hydra's ConfigStore.

The primary configs extend TrainConfig, EvalConfig or ExportConfig, which type every group node, so a misspelt key
or a value of the wrong type fails when Hydra composes the config, with Hydra's own message.
Keys mirror the constructor arguments they feed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class AugmentConfig:
    shift: int = 0  # images: random translation by up to this many pixels per sample and epoch (0: off)


@dataclass
class DatasetConfig:
    kind: str = MISSING  # mnist | fashion_mnist | cifar10 | digits | breast_cancer | jsc | openml | csv | synthetic
    root: str = "data"  # torchvision data sets: folder holding <Name>/raw
    download: bool = False
    path: Optional[str] = None  # csv: the training file
    target: Optional[str] = None  # csv: the label column
    test_path: Optional[str] = None  # csv: a separate test file
    test_fraction: float = 0.2  # csv/openml/jsc/sklearn sets without their own test split
    split_seed: int = 42  # seed of that train/test split
    data_home: Optional[str] = None  # openml/jsc: scikit-learn's download cache
    data_id: Optional[int] = None  # openml: the data set id
    num_samples: int = 1000  # synthetic
    num_features: int = 16  # synthetic
    num_classes: int = 3  # synthetic
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # mnist, fashion_mnist, cifar10


@dataclass
class EncodingConfig:
    kind: str = "distributive"  # distributive | uniform | gaussian
    num_bits: int = 3
    feature_wise: bool = True


@dataclass
class LayerConfig:
    out_features: int = MISSING
    n: int = 6
    mapping: str = "random"  # random | arange | learnable
    efd: str = "exponential"  # exponential | paper | fd
    alpha: Optional[float] = None  # null: lut.default_alpha(n)
    beta: Optional[float] = None  # null: lut.DEFAULT_BETA
    lm_tau: float = 0.001
    ste: bool = True
    clamp_luts: bool = True


@dataclass
class HeadConfig:
    kind: str = "group_sum"  # group_sum | reduction (learnable reduction, paper section 3.3)
    tau: float = 1.0
    n: int = 2  # reduction only: inputs per LUT of the pyramid
    efd: str = "exponential"  # reduction only: the pyramid's derivative estimate, as model.layers[i].efd


@dataclass
class RegularizerConfig:
    kind: str = "none"  # none | spectral | spectral_printed (paper section 3.4)
    weight: float = 0.0  # lambda: loss = cross-entropy + weight * penalty


@dataclass
class ModelConfig:
    layers: List[LayerConfig] = MISSING
    head: HeadConfig = field(default_factory=HeadConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)


@dataclass
class OptimizerConfig:
    kind: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-2
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw


@dataclass
class SchedulerConfig:
    kind: str = "step"  # step | multistep | cosine | none
    step_size: int = 14
    gamma: float = 0.1
    milestones: List[int] = field(default_factory=list)
    min_lr: float = 0.0  # cosine


@dataclass
class CheckpointConfig:
    save_last: bool = True
    save_best: bool = True
    monitor: str = "auto"  # auto (val_acc with a validation split, else train_acc) or a metrics key


@dataclass
class TrainerConfig:
    epochs: int = 30
    batch_size: int = 32
    eval_batch_size: int = 4096
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    backend: str = "auto"  # auto | torch | cuda
    strategy: str = "single"  # single | ddp (launched by torchrun)
    cuda_graphs: Optional[str] = "auto"  # auto | true | false: replay one captured training step (graphs.captures)
    deterministic: bool = False  # GPU: gradients summed without float atomics (bit-identical runs)
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    val_fraction: float = 0.0  # share of the training split held out for model selection
    threads: Optional[int] = None  # torch CPU threads; None keeps torch's default
    resume: Optional[str] = None  # null (refused where a run is) | auto | overwrite | path to a checkpoint
    plot: bool = True  # curves.png at the end
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class LoggerConfig:
    kind: str = "none"  # none | tensorboard


@dataclass
class TrainConfig:
    dataset: DatasetConfig = MISSING
    encoding: EncodingConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)


@dataclass
class DataOverrides:
    """Where dwn-eval and dwn-export find the data when it moved since training (null: as stored)."""
    root: Optional[str] = None  # torchvision data sets: the folder holding <Name>/raw
    path: Optional[str] = None  # csv: the training file
    test_path: Optional[str] = None  # csv: the test file
    data_home: Optional[str] = None  # jsc, openml: scikit-learn's OpenML cache folder


@dataclass
class EvalConfig:
    checkpoint: str = MISSING
    split: str = "test"  # test | val | train
    batch_size: int = 4096
    device: str = "auto"
    save_predictions: bool = False
    data_root: Optional[str] = None  # the same as dataset.root (kept for older command lines)
    dataset: DataOverrides = field(default_factory=DataOverrides)
    engine: str = "float"  # float (the torch model) | packed (the frozen network, bit-sliced: compiled C, else numpy)
    threads: int = 0  # engine=packed: threads of the compiled engine (0: every core this process may use)
    cost: bool = False  # also print the frozen network's hardware cost report


@dataclass
class ExportConfig:
    checkpoint: str = MISSING
    format: str = "verilog"  # verilog | c | json
    out: Optional[str] = None  # default: <run dir>/export
    overwrite: bool = False  # replace export files already in out (false: refuse, naming them)
    verify: bool = False  # simulate (iverilog) / compile and run (gcc) / reload, and compare with Python
    pipeline: str = "none"  # verilog: none (combinational) | layers (a stage after every LUT layer) | full
    registered: bool = False  # the same as pipeline=layers (kept for older command lines)
    input_bits: Optional[int] = None  # null: uint8 for byte data, else signed, as wide as the thresholds need
    frac_bits: Optional[int] = None  # null: as many as keep training values on their side of each threshold
    vectors: Optional[int] = None  # test samples in vectors.hex and verified (null: 1000 with Verilator, 8 with Icarus)
    simulator: str = "auto"  # verilog verify: auto (Verilator when installed, else Icarus) | verilator | iverilog
    yosys: bool = False  # verilog: add a yosys synth -lut 6 count of the whole design (minutes for MNIST)
    fpga: str = "none"  # verilog: none | ice40 | ecp5 (yosys + nextpnr: LUT4, FF, Fmax) | xilinx (yosys: LUT6, FF)
    fpga_device: Optional[str] = None  # null: the largest; ice40: hx1k | up5k | hx8k; ecp5: 25k | 45k | 85k
    fpga_timeout: float = 300  # ice40: seconds nextpnr may route with one seed before the next seed is tried
    shell: str = "none"  # verilog: none | serial (also write dwn_shell.v, the board wrapper; fpga=ice40 uses it)
    data_root: Optional[str] = None  # the same as dataset.root (kept for older command lines)
    dataset: DataOverrides = field(default_factory=DataOverrides)


def stored_config(plain: dict):
    """A checkpoint's stored config over today's defaults, so checkpoints written before a key
    existed still load (new options take their defaults; keys no longer used are kept, unread)."""
    groups = {"dataset": DatasetConfig, "encoding": EncodingConfig, "model": ModelConfig,
              "optimizer": OptimizerConfig, "scheduler": SchedulerConfig, "trainer": TrainerConfig,
              "logger": LoggerConfig}
    base = OmegaConf.create({name: OmegaConf.to_container(OmegaConf.structured(cls)) for name, cls in groups.items()})
    plain = _renamed(plain)
    merged = OmegaConf.merge(base, plain)
    layer_defaults = OmegaConf.to_container(OmegaConf.structured(LayerConfig))
    merged.model.layers = [OmegaConf.merge(layer_defaults, layer) for layer in plain["model"]["layers"]]
    return merged


# dataset keys that name files or folders: stored absolute, so a checkpoint finds its data from
# any working directory
_PATH_KEYS = ("root", "path", "test_path", "data_home")


def stored_paths_absolute(plain: dict) -> dict:
    """The resolved config as a checkpoint stores it: dataset paths made absolute."""
    dataset = plain.get("dataset", {})
    for key in _PATH_KEYS:
        if dataset.get(key):
            dataset[key] = os.path.abspath(dataset[key])
    return plain


# settings a resumed run may change: where and how fast it runs, what it writes and keeps, how
# long it trains, where its data lies; every other setting shapes the run and must stay as trained
RESUME_MAY_CHANGE = ("trainer.epochs", "trainer.threads", "trainer.resume", "trainer.device", "trainer.backend",
                     "trainer.strategy", "trainer.cuda_graphs", "trainer.deterministic", "trainer.eval_every",
                     "trainer.eval_batch_size", "trainer.plot", "trainer.checkpoint.save_last",
                     "trainer.checkpoint.save_best", "logger", "dataset.root", "dataset.download", "dataset.path",
                     "dataset.test_path", "dataset.data_home")


ABSENT = object()  # a key one of two configs does not have


def _pairs(old, new, prefix: str = ""):
    """(dotted key, old value, new value) over two plain configs, down to scalars, lists of
    scalars, and lists of dicts of different lengths (compared whole: model.layers of another depth)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            yield from _pairs(old.get(key, ABSENT), new.get(key, ABSENT), f"{prefix}{key}.")
    elif (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
          and all(isinstance(item, dict) for item in old + new)):
        for index, (a, b) in enumerate(zip(old, new)):
            yield from _pairs(a, b, f"{prefix}{index}.")
    else:
        yield prefix[:-1], old, new


def may_change(key: str, keys=RESUME_MAY_CHANGE) -> bool:
    """Whether the dotted `key` is one of `keys` or under one of them (a setting a resume may change)."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def changed_settings(trained: dict, today: dict, may_change_keys=RESUME_MAY_CHANGE) -> list[tuple[str, object, object]]:
    """(key, trained value, today's value) of every setting that differs between a checkpoint's
    config (`trained`, already merged over today's defaults) and today's, leaving out the keys in
    `may_change_keys` and everything under them; a key only one side has gets ABSENT on the other."""
    return [(key, old, new) for key, old, new in _pairs(trained, today)
            if not may_change(key, may_change_keys) and old != new]


def unknown_keys(cfg, schema, prefix: str = "") -> list[str]:
    """Keys of `cfg` that the dataclass `schema` does not declare (Hydra's `+key=value` adds them
    without complaint), searched through nested dataclasses and lists of them."""
    names = {f.name: f.type for f in fields(schema)}
    found = []
    for key in cfg.keys():
        if key not in names:
            found.append(f"{prefix}{key}")
            continue
        inner = _SCHEMAS.get(names[key]) or _SCHEMAS.get(_list_item(names[key]))
        value = cfg[key]
        if inner is None or value is None or OmegaConf.is_missing(cfg, key):
            continue
        items = enumerate(value) if OmegaConf.is_list(value) else [(None, value)]
        for index, item in items:
            if OmegaConf.is_dict(item):
                found += unknown_keys(item, inner, f"{prefix}{key}." + ("" if index is None else f"{index}."))
    return found


def _list_item(annotation: str):
    return annotation[len("List["):-1] if isinstance(annotation, str) and annotation.startswith("List[") else None


# keys renamed since checkpoints were first written: (group, old name) -> new name
_RENAMED = {("optimizer", "name"): "kind"}


def _renamed(plain: dict) -> dict:
    """A copy of a stored config with renamed keys under their new names."""
    plain = {group: dict(values) if isinstance(values, dict) else values for group, values in plain.items()}
    for (group, old), new in _RENAMED.items():
        values = plain.get(group)
        if isinstance(values, dict) and old in values:
            values.setdefault(new, values.pop(old))
    return plain


# the schemas by the name their fields are annotated with (annotations are strings here)
_SCHEMAS = {cls.__name__: cls for cls in (AugmentConfig, DatasetConfig, EncodingConfig, LayerConfig, HeadConfig, RegularizerConfig,
                                          ModelConfig, OptimizerConfig, SchedulerConfig, CheckpointConfig,
                                          TrainerConfig, LoggerConfig, DataOverrides)}


def register_configs() -> None:
    """Put the three primary schemas in Hydra's ConfigStore (idempotent). TrainConfig types every
    group node, so the group files under conf/ need no schema of their own (and --help lists only
    real options)."""
    store = ConfigStore.instance()
    store.store(name="base_train", node=TrainConfig)
    store.store(name="base_eval", node=EvalConfig)
    store.store(name="base_export", node=ExportConfig)
