"""The checkpoint module: atomic writes, safe loads, the payload, and the one restore path."""

import os
import pickle

import pytest
import torch

import dwn_train as dwn
from dwn_train import DWNError
from dwn_train.errors import RunError
from dwn_train.checkpoint import load_checkpoint, make_payload, restore, save_checkpoint
from dwn_train.config import stored_config
from dwn_train.model import build_encoder, build_model
from conftest import compose
from helpers.runs import SMALL


def _minimal(epoch):
    """The smallest payload load_checkpoint accepts."""
    config = {group: {} for group in ("dataset", "encoding", "model", "trainer")}
    return {"model": {}, "encoder": {}, "config": config, "epoch": epoch, "step": 0,
            "data": {"in_features": 4, "num_classes": 2, "feature_shape": [4]}}


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_minimal(1), path)

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RunError, match=f"could not write the checkpoint {path} .disk full.; the previous last.pt is kept"):
        save_checkpoint(_minimal(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_a_full_disk_in_torchs_zip_writer_is_one_sentence(tmp_path, monkeypatch):
    def full(obj, handle):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 448\nframe #0 ...")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunError, match=r"\(\[enforce fail at inline_container.cc:664\] . unexpected pos 512 vs 448; "
                                       r"the disk is most likely full\); no earlier checkpoint existed"):
        save_checkpoint({"epoch": 1}, tmp_path / "c" / "last.pt")
    assert os.listdir(tmp_path / "c") == []


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    from dwn_train.checkpoint import remove_stale_temporaries

    save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    (tmp_path / ".last.pt.k2j3_x.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("mine")
    assert remove_stale_temporaries(tmp_path) == [tmp_path / ".last.pt.k2j3_x.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "notes.tmp"]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"), ("truncated", "truncated"), ("foreign", "not a dwn-train checkpoint"),
    ("pickle", "unpickling"), ("random", "not a torch checkpoint file"), ("newer", "has format version 99"),
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
    elif case == "random":
        path.write_bytes(bytes(range(256)) * 12)
    elif case == "newer":  # written by a later dwn-train
        save_checkpoint({"epoch": 1, "model": {}}, path)
        payload = torch.load(path, weights_only=True)
        torch.save({**payload, "version": 99}, path)
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
    payload["config"]["dataset"]["kind"] = "mnist"  # as if trained on MNIST, whose files have moved
    save_checkpoint(payload, tmp_path / "c.pt")
    restored = restore(tmp_path / "c.pt", {"root": "/moved/data"})
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
    with pytest.raises(DWNError, match="damaged or incomplete: no 'config' entry"):
        restore(tmp_path / "c.pt")


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.pop("epoch"), "no 'epoch' entry"),
    (lambda p: p["data"].pop("in_features"), "its 'data' entry is not the data description"),
    (lambda p: p["config"].pop("model"), "its 'config' entry is not the training config"),
    (lambda p: p.update(version="x"), "unreadable format version 'x'"),
    (lambda p: p["config"]["encoding"].update(kind="zzz"), "stored config does not build a model: encoding.kind"),
    (lambda p: p["config"]["model"]["layers"][0].update(n=99), "stored config does not build a model: "
                                                              r"model.layers\[0\].n"),
])
def test_a_damaged_payload_is_named_not_a_traceback(tmp_path, damage, words):
    _, _, payload = _trained_payload(compose(SMALL))
    damage(payload)
    save_checkpoint(payload, tmp_path / "c.pt")
    with pytest.raises(DWNError, match=words):
        restore(tmp_path / "c.pt")


def test_a_data_override_that_does_not_apply_to_the_checkpoints_data_is_named(tmp_path):
    _, _, payload = _trained_payload(compose(SMALL))  # dataset=digits: bundled, nothing to move
    save_checkpoint(payload, tmp_path / "c.pt")
    for key in ("path", "root", "data_home"):
        with pytest.raises(DWNError, match=f"dataset.{key}=/x does not apply: .* was trained on dataset=digits"):
            restore(tmp_path / "c.pt", {key: "/x"})


def test_an_encoder_state_without_thresholds_names_the_missing_key(tmp_path):
    _, _, payload = _trained_payload(compose(SMALL))
    payload["encoder"] = {}
    save_checkpoint(payload, tmp_path / "c.pt")
    with pytest.raises(DWNError, match="encoder does not fit .*Missing key.s. in state_dict: \"thresholds\""):
        restore(tmp_path / "c.pt")


@pytest.mark.parametrize("content", [b"hello", b"h\x00", b"j" * 9, b""])
def test_bytes_that_are_not_a_torch_file_are_one_sentence(tmp_path, content):
    (tmp_path / "c.pt").write_bytes(content)
    with pytest.raises(DWNError, match="is truncated or not a torch file"):
        load_checkpoint(tmp_path / "c.pt")


def test_stored_configs_with_renamed_keys_still_load():
    plain = {"optimizer": {"name": "sgd", "lr": 0.1}, "model": {"layers": [{"out_features": 10}]}}
    cfg = stored_config(plain)
    assert cfg.optimizer.kind == "sgd" and "name" not in cfg.optimizer
    assert cfg.model.layers[0].n == 6  # today's defaults fill what an old config lacks
    assert plain["optimizer"] == {"name": "sgd", "lr": 0.1}  # the caller's dict is not changed
    with pytest.raises(dwn.DWNError):
        restore("/no/such/checkpoint.pt")


@pytest.mark.parametrize("schema", ["EvalConfig", "ExportConfig"])
def test_eval_and_export_point_every_data_location_key_at_moved_data(schema):
    from omegaconf import OmegaConf

    from dwn_train import config
    from dwn_train.checkpoint import data_overrides

    moved = dict(root="/d/img", path="/d/a.csv", test_path="/d/b.csv", data_home="/d/openml")
    cfg = OmegaConf.merge(OmegaConf.structured(getattr(config, schema)), {"dataset": moved})
    assert data_overrides(cfg) == moved
    assert data_overrides(OmegaConf.structured(getattr(config, schema))) == {}


def test_an_unknown_stored_dataset_kind_is_one_sentence_in_every_command(tiny_run, run_cli, tmp_path):
    from helpers.runs import TINY, clean

    payload = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    payload["config"]["dataset"]["kind"] = "nope"  # edited, or written by a dwn-train that knows more kinds
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(payload, last)
    words = ("checkpoint {} was trained on dataset.kind='nope', which this dwn-train does not know (it knows "
             "breast_cancer, cifar10, csv, digits, fashion_mnist, jsc, mnist, openml, synthetic): the checkpoint is "
             "damaged or from a newer dwn-train.")
    clean(*run_cli("eval", f"checkpoint={last}", f"hydra.run.dir={tmp_path / 'e'}"), 2, words.format(repr(str(last))))
    clean(*run_cli("export", f"checkpoint={last}", "format=json", f"hydra.run.dir={tmp_path / 'x'}"), 2,
          words.format(repr(str(last))))
    before = last.read_bytes()
    clean(*run_cli("train", *TINY, "trainer.epochs=3", "trainer.resume=auto", f"hydra.run.dir={tmp_path / 'run'}"),
          2, words.format(repr(str(last))))
    assert last.read_bytes() == before
