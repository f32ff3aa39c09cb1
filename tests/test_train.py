"""The training run in-process: learning, run-folder outputs, checkpoints and their errors."""

import json
import os
import pickle

import pytest
import torch

from dwn_train import DWNError
from dwn_train.checkpoint import load_checkpoint, save_checkpoint
from dwn_train.train import train
from conftest import SMALL


def test_digits_run_learns_and_writes_its_folder(compose_cfg, tmp_path):
    cfg = compose_cfg([*SMALL, "trainer.epochs=4", "trainer.val_fraction=0.1", "trainer.plot=true"])
    best = train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["test_acc"] > 0.88, rows[-1]
    assert best == max(r["val_acc"] for r in rows)  # selected on validation, never on test
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 5
    assert (tmp_path / "curves.png").stat().st_size > 1000
    payload = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert payload["monitor"] == "val_acc" and payload["best_metric"] == best
    assert payload["config"]["dataset"]["kind"] == "digits"
    # a plain dict that weights_only reads
    assert isinstance(torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"], dict)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"), ("truncated", "truncated"), ("foreign", "not a dwn-train checkpoint"),
    ("pickle", "unpickling"),
])
def test_bad_checkpoints_are_clear_errors(case, words, tmp_path):
    path = tmp_path / "c.pt"
    if case == "truncated":
        save_checkpoint({"epoch": 1, "model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif case == "foreign":
        torch.save({"state_dict": {}}, path)
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"format": "dwn-train-checkpoint", "x": Evil()}, protocol=2))
    with pytest.raises(DWNError, match=words):
        load_checkpoint(path)


@pytest.mark.parametrize("override, words", [
    ("trainer.batch_size=0", "batch_size"),
    ("model.layers.0.n=0", "n must be"),
    ("model.layers.0.n=17", "n must be"),
    ("model.layers.1.out_features=-5", "out_features"),
    ("model.layers.1.out_features=205", "GroupSum"),
    ("trainer.device=tpu", "device"),
    ("trainer.cuda_graphs=true", "cuda_graphs"),
    ("trainer.backend=gpu", "backend"),
    ("trainer.checkpoint.monitor=test_acc", "never chooses"),
    ("trainer.checkpoint.monitor=val_acc", "val_fraction"),
])
def test_config_values_are_checked(override, words, compose_cfg, tmp_path):
    cfg = compose_cfg([*SMALL, "trainer.epochs=1", override])
    with pytest.raises(DWNError, match=words):
        train(cfg, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_csv_errors(compose_cfg, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("a,b,y\n1,2,x\n3,4,z\n")
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b,y\n1,,x\n3,4,z\n")
    for path, target, words in ((tmp_path / "nope.csv", "y", "does not exist"), (good, "label", "not a column"),
                                (nan, "y", "NaN")):
        cfg = compose_cfg([*SMALL, "dataset=csv", f"dataset.path={path}", f"dataset.target={target}"])
        with pytest.raises(DWNError, match=words):
            train(cfg, tmp_path)


def test_absent_offline_dataset_says_how_to_fix(compose_cfg, tmp_path):
    cfg = compose_cfg(["dataset=mnist", f"dataset.root={tmp_path}", "trainer.epochs=1"])
    with pytest.raises(DWNError, match="dataset.root.*download=true"):
        train(cfg, tmp_path)


def test_tensorboard_logger_writes_events(compose_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    train(compose_cfg([*SMALL, "trainer.epochs=1", "logger=tensorboard"]), tmp_path)
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("extra", [["model.regularizer.kind=spectral", "model.regularizer.weight=0.01"],
                                   ["model.head.kind=reduction", "model.layers.1.out_features=320", "model.head.tau=0.5"]])
def test_regularizer_and_reduction_head_train_from_the_config(extra, compose_cfg, tmp_path):
    base = [*SMALL, "trainer.epochs=5"]
    train(compose_cfg(base), tmp_path / "plain")
    train(compose_cfg(base + extra), tmp_path / "changed")
    read = lambda p: json.loads((p / "metrics.jsonl").read_text().splitlines()[-1])
    assert read(tmp_path / "changed")["train_loss"] != read(tmp_path / "plain")["train_loss"]
    assert read(tmp_path / "changed")["test_acc"] > 0.5


def test_unknown_regularizer_and_head_are_clear_errors(compose_cfg, tmp_path):
    for override, words in (("model.regularizer.kind=l3", "regularizer"), ("model.head.kind=vote", "head.kind")):
        with pytest.raises(DWNError, match=words):
            train(compose_cfg([*SMALL, override]), tmp_path)
