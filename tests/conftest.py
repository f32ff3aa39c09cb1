"""Shared fixtures: compose configs with Hydra's compose API, run the console scripts in-process."""

from __future__ import annotations

import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dwn_train.config import register_configs
from dwn_train.resources import conf_dir

# a fast model for the small data sets used in tests
SMALL = ["dataset=digits", "model=digits_small", "model.layers.0.out_features=300", "model.layers.1.out_features=200",
         "trainer.batch_size=64", "trainer.plot=false"]


def fit_and_score(model, x_train, y_train, x_test, y_test, epochs: int, batch: int = 32) -> float:
    """Plain library training (Adam 1e-2, cross-entropy), then test accuracy."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(x_train)).split(batch):
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(-1) == y_test).float().mean().item()


@pytest.fixture
def compose_cfg():
    """compose_cfg(overrides, config_name='train') -> DictConfig, with GlobalHydra cleared after."""
    register_configs()

    def _compose(overrides=(), config_name="train"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """run_cli('train'|'eval', *overrides) -> (exit code, stdout, stderr), in this process."""
    from dwn_train import cli

    def _run(which, *overrides):
        GlobalHydra.instance().clear()
        monkeypatch.setattr(cli, "_started", False)
        monkeypatch.setattr(sys, "argv", [f"dwn-{which}", *overrides])
        code = 0
        try:
            (cli.train_main if which == "train" else cli.eval_main)()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            GlobalHydra.instance().clear()
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run
