"""trainer.strategy=ddp: two gloo processes on the CPU, launched by torchrun like a user would."""

import os
import subprocess
import sys

import pytest
import torch

from helpers.runs import SMALL, metric_rows

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
_port = iter(range(29700, 29800))


def _torchrun(*overrides, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={next(_port)}",
           "-m", "dwn_train.cli", *SMALL, "trainer.threads=1", "trainer.strategy=ddp", *overrides]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _single(*overrides):
    subprocess.run(["dwn-train", *SMALL, "trainer.threads=1", *overrides], env=ENV, check=True, capture_output=True)


def _weights(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_two_processes_make_the_same_update_as_one(tmp_path):
    # one SGD step on one global batch (the whole training split): the update is -lr * gradient
    common = ("trainer.epochs=1", "trainer.batch_size=2000", "optimizer=sgd", "optimizer.momentum=0")
    _single(*common, f"hydra.run.dir={tmp_path}/one")
    _torchrun(*common, f"hydra.run.dir={tmp_path}/two")
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6)
    assert metric_rows(tmp_path / "two")[0]["train_loss"] == pytest.approx(metric_rows(tmp_path / "one")[0]["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_two_processes_train_well_write_once_and_resume(tmp_path):
    run = tmp_path / "run"
    _torchrun("trainer.epochs=2", f"hydra.run.dir={run}")
    _torchrun("trainer.epochs=3", "trainer.resume=auto", f"hydra.run.dir={run}")
    rows = metric_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # rank 0 alone wrote, once per epoch
    assert rows[-1]["test_acc"] > 0.85, rows[-1]
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "checkpoints", "metrics.csv", "metrics.jsonl", "train.log"]


def test_ddp_without_torchrun_is_a_clear_error(run_cli, tmp_path):
    code, out, err = run_cli("train", *SMALL, "trainer.strategy=ddp", f"hydra.run.dir={tmp_path}")
    assert code == 2 and "torchrun" in err and "Traceback" not in out + err
