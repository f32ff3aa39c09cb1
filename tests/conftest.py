"""Shared fixtures: compose configs with Hydra's compose API, run the console scripts in-process,
train the tiny digits run once per session. Helpers that are not fixtures live in tests/helpers/.

Hydra is imported inside the fixtures, not here: the GPU machine's image has no Hydra, and its
kernel and layer tests must still collect there (the fixtures that need Hydra skip without it).
"""

from __future__ import annotations

import sys

import pytest


def compose(overrides=(), config_name="train"):
    """A composed config (train.yaml, eval.yaml or export.yaml) with `overrides`; GlobalHydra is
    cleared before and after. Skips the calling test where Hydra is not installed."""
    pytest.importorskip("hydra")
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dwn_train.config import register_configs
    from dwn_train.resources import conf_dir

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def compose_cfg():
    """compose_cfg(overrides, config_name='train') -> DictConfig (see compose)."""
    return compose


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """run_cli('train'|'eval'|'export', *overrides) -> (exit code, stdout, stderr), in this process."""
    pytest.importorskip("hydra")
    from hydra.core.global_hydra import GlobalHydra

    from dwn_train import cli
    from dwn_train.run import precheck

    def _run(which, *overrides):
        GlobalHydra.instance().clear()
        monkeypatch.setattr(precheck, "_started", False)
        monkeypatch.setattr(sys, "argv", [f"dwn-{which}", *overrides])
        code = 0
        try:
            {"train": cli.train_main, "eval": cli.eval_main, "export": cli.export_main}[which]()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished two-epoch digits run (helpers.runs.TINY), trained once per session: tests may add
    to its log and Hydra's record (a refused command does), but must leave its checkpoints and
    metrics as they are."""
    from dwn_train.train import train
    from helpers.runs import TINY

    run = tmp_path_factory.mktemp("tiny_run")
    train(compose(TINY), run)
    return run
