"""The checkpoint module: atomic writes, safe loads, the payload, and the one restore path."""

import os
import pickle

import pytest
import torch

import dwn_train as dwn
from dwn_train import DWNError
from dwn_train.checkpoint import load_checkpoint, make_payload, restore, save_checkpoint
from dwn_train.config import stored_config
from dwn_train.model import build_encoder, build_model
from conftest import SMALL, compose


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


def _trained_payload(cfg):
    """A payload as the trainer writes it, for a digits-sized model (untrained is enough)."""
    torch.manual_seed(0)
    encoder = build_encoder(cfg.encoding).fit(torch.rand(50, 64) * 16)
    model = build_model(cfg.model, 64 * encoder.num_bits, 10)
    optimizer = torch.optim.Adam(model.parameters())
    from omegaconf import OmegaConf

    return model, encoder, make_payload(
        model=model, encoder=encoder, optimizer=optimizer, scheduler=None, epoch=3, step=30, best_metric=0.5,
        monitor="train_acc", config=OmegaConf.to_container(cfg, resolve=True),
        data={"num_classes": 10, "feature_shape": [64], "in_features": 64 * encoder.num_bits})


def test_restore_rebuilds_the_same_network(tmp_path):
    cfg = compose(SMALL)
    model, encoder, payload = _trained_payload(cfg)
    save_checkpoint(payload, tmp_path / "c.pt")
    restored = restore(tmp_path / "c.pt", data_root="/moved/data")
    x = (torch.rand(7, 192) > 0.5).float()
    model.eval()
    assert torch.equal(restored.model(x), model(x)) and not restored.model.training
    assert torch.equal(restored.encoder.thresholds, encoder.thresholds)
    assert restored.payload["epoch"] == 3 and restored.data["in_features"] == 192
    assert restored.config.dataset.root == "/moved/data"


def test_restore_reports_weights_that_do_not_fit_and_missing_config(tmp_path):
    _, _, payload = _trained_payload(compose(SMALL))
    payload["config"]["model"]["layers"][0]["out_features"] = 280  # the weights say 300
    save_checkpoint(payload, tmp_path / "c.pt")
    with pytest.raises(DWNError, match="does not fit the model its config describes"):
        restore(tmp_path / "c.pt")
    del payload["config"]
    save_checkpoint(payload, tmp_path / "c.pt")
    with pytest.raises(DWNError, match="no stored config"):
        restore(tmp_path / "c.pt")


def test_stored_configs_with_renamed_keys_still_load():
    plain = {"optimizer": {"name": "sgd", "lr": 0.1}, "model": {"layers": [{"out_features": 10}]}}
    cfg = stored_config(plain)
    assert cfg.optimizer.kind == "sgd" and "name" not in cfg.optimizer
    assert cfg.model.layers[0].n == 6  # today's defaults fill what an old config lacks
    assert plain["optimizer"] == {"name": "sgd", "lr": 0.1}  # the caller's dict is not changed
    with pytest.raises(dwn.DWNError):
        restore("/no/such/checkpoint.pt")
