"""Every option of every config group composes, passes validation and builds; typos fail at
compose time."""

import importlib.util

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from dwn_train import DWNError, LUTLayer
from dwn_train.data import load_dataset
from dwn_train.model import build_encoder, build_model
from dwn_train.optim import build_optimizer, build_scheduler
from dwn_train.resources import conf_dir
from dwn_train.validate import check_train

GROUPS = ["dataset", "encoding", "model", "optimizer", "scheduler", "trainer", "logger", "experiment"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((conf_dir() / g).glob("*.yaml"))]
NO_DOWNLOAD = {"digits", "breast_cancer", "synthetic"}


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group, option, compose_cfg, tmp_path):
    override = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
    extra = []
    if group == "dataset" and option == "csv":
        path = tmp_path / "t.csv"
        path.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
        extra = [f"dataset.path={path}", "dataset.target=label"]
    if group == "dataset" and option == "openml":
        extra = ["dataset.data_id=61"]
    cfg = compose_cfg([override, *extra])
    if option == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(DWNError, match="logger=tensorboard needs the tensorboard package: pip install"):
            check_train(cfg)  # said before anything is written, not after the run has cleared its folder
        return
    check_train(cfg)
    encoder = build_encoder(cfg.encoding)
    width = cfg.model.layers[-1].out_features
    classes = next(c for c in (10, 5, 2) if width % c == 0)
    model = build_model(cfg.model, in_features=16 * encoder.num_bits, num_classes=classes)
    layers = [m for m in model if isinstance(m, LUTLayer)]
    assert [(m.in_features, m.out_features, m.n) for m in layers] == [
        (i, l.out_features, l.n) for i, l in zip([16 * encoder.num_bits] + [l.out_features for l in cfg.model.layers],
                                                 cfg.model.layers)]
    assert model(torch.zeros(2, 16 * encoder.num_bits)).shape == (2, classes)
    optimizer = build_optimizer(cfg.optimizer, model)
    build_scheduler(cfg.scheduler, optimizer, cfg.trainer.epochs)
    if group == "dataset" and (option in NO_DOWNLOAD or option == "csv"):
        splits = load_dataset(cfg.dataset)
        assert len(splits.x_train) > len(splits.x_test) > 0 and splits.num_classes >= 2


def test_experiment_headers_name_their_command():
    for path in sorted((conf_dir() / "experiment").glob("*.yaml")):
        lines = path.read_text().splitlines()
        assert lines[0] == "# @package _global_" and lines[1].startswith("# dwn-train +experiment=" + path.stem)


def test_default_is_the_torch_dwn_mnist_recipe(compose_cfg):
    cfg = compose_cfg()
    assert cfg.dataset.kind == "mnist" and cfg.encoding.kind == "distributive" and cfg.encoding.num_bits == 3
    assert [(l.out_features, l.n, l.mapping) for l in cfg.model.layers] == [(2000, 6, "learnable"), (1000, 6, "random")]
    assert cfg.model.head.tau == pytest.approx(1 / 0.3)
    assert (cfg.optimizer.kind, cfg.optimizer.lr) == ("adam", 0.01)
    assert (cfg.scheduler.kind, cfg.scheduler.step_size, cfg.scheduler.gamma) == ("step", 14, 0.1)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (30, 32)


def test_recipe_aug_is_the_recipe_with_one_pixel_shifts(compose_cfg):
    recipe = OmegaConf.to_container(compose_cfg(), resolve=True)
    shifted = OmegaConf.to_container(compose_cfg(["+experiment=mnist_recipe_aug"]), resolve=True)
    assert recipe["dataset"]["augment"]["shift"] == 0 and shifted["dataset"]["augment"]["shift"] == 1
    shifted["dataset"]["augment"]["shift"] = 0
    assert shifted == recipe


@pytest.mark.parametrize("override", ["trainer.epoch=3", "trainer.epochs=many", "model.head.tua=2"])
def test_typos_and_wrong_types_fail_at_compose_time(override, compose_cfg):
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)):
        compose_cfg([override])


@pytest.mark.parametrize("trained, today", [
    # another seed and head, a null on one side, a list, a string with a space and a quote
    (["trainer.seed=3", "model.head.tau=2", "model.layers.0.alpha=0.2", "scheduler=multistep",
      "scheduler.milestones=[4,8]", "dataset=csv", "dataset.path=a.csv", "dataset.target='it\\'s a label'"],
     ["dataset=csv", "dataset.path=a.csv", "dataset.target=label"]),
    # a model of another depth: the layer list is compared, and set back, whole
    (["model=breast_cancer_small"], ["model=digits_small"]),
    # strings Hydra would read as a number or a bool unless quoted
    (["dataset=csv", "dataset.path=1e-3", "dataset.target='true'"], ["dataset=csv", "dataset.path=a", "dataset.target=t"]),
])
def test_the_settings_a_refused_resume_names_are_the_fix(trained, today, compose_cfg):
    """changed_settings lists what differs from a checkpoint's config, and override() writes each as
    a command-line override (Hydra syntax, shell-quoted): today's command plus those overrides
    composes to the trained settings."""
    import shlex

    from dwn_train.config import RESUME_MAY_CHANGE, changed_settings
    from dwn_train.run.command import override

    plain = lambda overrides: OmegaConf.to_container(compose_cfg(overrides), resolve=True)
    old = plain(trained)
    changed = changed_settings(old, plain([*today, "trainer.threads=1", "trainer.epochs=99"]))
    assert changed and not any(key.startswith(RESUME_MAY_CHANGE) for key, _, _ in changed)
    fix = shlex.split(" ".join(override(key, value) for key, value, _ in changed))
    assert changed_settings(old, plain([*today, *fix])) == []


def _keys(node, prefix=""):
    """Every key of a plain config, dotted, down to scalars and lists."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path, schema", [("trainer/default.yaml", "TrainerConfig"), ("eval.yaml", "EvalConfig"),
                                          ("export.yaml", "ExportConfig")])
def test_every_user_facing_key_is_in_conf_with_its_default_and_a_comment(path, schema):
    """conf/ shows every setting a user can give, at the schema's default (the dataclasses stay the
    schema; the YAML must not drift from them), each with a comment on its line or above it."""
    import yaml

    from dwn_train import config

    text = (conf_dir() / path).read_text()
    shown = dict(_keys({k: v for k, v in yaml.safe_load(text).items() if k not in ("defaults", "hydra")}))
    defaults = dict(_keys(OmegaConf.to_container(OmegaConf.structured(getattr(config, schema)))))
    assert shown.keys() == defaults.keys(), (shown.keys() ^ defaults.keys())
    for key, value in defaults.items():
        assert value == "???" or shown[key] == value, (key, shown[key], value)
    lines = text.splitlines()
    for key in shown:
        leaf = key.split(".")[-1]
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{leaf}:"))
        assert "#" in lines[at] or lines[at - 1].lstrip().startswith("#"), f"{path}: {key} has no comment"


@pytest.mark.parametrize("group", ["model", "optimizer"])
def test_model_and_optimizer_files_show_their_keys(group):
    """Each model file shows the whole head and regularizer; each optimizer file every key its kind reads."""
    import yaml

    from dwn_train import config

    for path in sorted((conf_dir() / group).glob("*.yaml")):
        shown = yaml.safe_load(path.read_text())
        if group == "model":
            for part, schema in (("head", config.HeadConfig), ("regularizer", config.RegularizerConfig)):
                assert set(shown[part]) == set(OmegaConf.structured(schema)), (path.name, part)
        else:
            unused = {"sgd": "betas"}.get(shown["kind"], "momentum")  # what the other kinds read
            assert set(shown) | {unused} == set(OmegaConf.structured(config.OptimizerConfig)), path.name
