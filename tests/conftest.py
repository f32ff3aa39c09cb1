"""Shared fixtures: compose configs with Hydra's compose API, run the console scripts in-process.

Hydra is imported inside the fixtures, not here: the GPU machine's image has no Hydra, and its
kernel and layer tests must still collect there (the fixtures that need Hydra skip without it).
"""

from __future__ import annotations

import sys

import pytest

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


def signed_fixed_point_model(samples: int):
    """(x, encoder, model): features of mixed scales with negative values (a signed 16-bit input
    format), a Gaussian thermometer fitted on them and an untrained two-layer network in eval mode."""
    import numpy as np
    import torch

    import dwn_train as dwn

    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(samples, 6)) * [1, 5, 0.1, 20, 1, 1]
    encoder = dwn.GaussianThermometer(5).fit(x)
    model = torch.nn.Sequential(dwn.LUTLayer(30, 40, n=4), dwn.LUTLayer(40, 21, n=3), dwn.GroupSum(3)).eval()
    return x, encoder, model


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

    def _run(which, *overrides):
        GlobalHydra.instance().clear()
        monkeypatch.setattr(cli, "_started", False)
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
