"""The training run in-process: learning, run-folder outputs, the one validation pass, the step."""


import pytest
import torch

import dwn_train as dwn
from dwn_train import DWNError
from dwn_train.regularizers import spectral
from dwn_train.checkpoint import load_checkpoint
from dwn_train.train import train
from conftest import compose
from helpers.runs import SMALL, metric_rows


def _last_row(run_dir):
    return metric_rows(run_dir)[-1]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """The 5-epoch SMALL digits run that config changes are compared with, trained once."""
    run = tmp_path_factory.mktemp("plain")
    train(compose([*SMALL, "trainer.epochs=5"]), run)
    return run


@pytest.mark.slow
def test_digits_run_learns_and_writes_its_folder(compose_cfg, tmp_path):
    cfg = compose_cfg([*SMALL, "trainer.epochs=4", "trainer.val_fraction=0.1", "trainer.plot=true"])
    best = train(cfg, tmp_path)
    rows = metric_rows(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["test_acc"] > 0.88, rows[-1]
    assert best == max(r["val_acc"] for r in rows)  # selected on validation, never on test
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 5
    assert (tmp_path / "curves.png").stat().st_size > 1000
    payload = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert payload["monitor"] == "val_acc" and payload["best_metric"] == best
    assert payload["epoch"] == next(r["epoch"] for r in rows if r["val_acc"] == best)  # the first best
    assert payload["config"]["dataset"]["kind"] == "digits"
    # a plain dict that weights_only reads
    assert isinstance(torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"], dict)


@pytest.mark.slow
def test_a_loss_monitor_keeps_the_lowest_and_eval_every_skips_epochs(compose_cfg, tmp_path):
    best = train(compose_cfg([*SMALL, "trainer.epochs=3", "trainer.eval_every=2",
                              "trainer.checkpoint.monitor=train_loss"]), tmp_path)
    rows = metric_rows(tmp_path)
    assert [r.get("test_acc") is not None for r in rows] == [False, True, True]  # epoch 2, and the last
    lowest = min(rows, key=lambda r: r["train_loss"])
    assert best == lowest["train_loss"]
    payload = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert payload["monitor"] == "train_loss" and payload["epoch"] == lowest["epoch"]


@pytest.mark.parametrize("override, words", [
    ("trainer.batch_size=0", "batch_size"),
    ("model.layers.0.n=0", "n must be"),
    ("model.layers.0.n=17", "n must be"),
    ("model.layers.1.out_features=-5", "out_features"),
    ("trainer.device=tpu", "device"),
    ("trainer.cuda_graphs=true trainer.device=cpu", "cuda_graphs"),
    ("trainer.cuda_graphs=maybe", "trainer.cuda_graphs must be auto, true or false; got 'maybe'"),
    ("trainer.cuda_graphs=1", "trainer.cuda_graphs must be auto, true or false; got '1'"),
    ("trainer.cuda_graphs=null", "trainer.cuda_graphs must be auto, true or false; got None"),
    ("trainer.cuda_graphs=AUTO", "trainer.cuda_graphs must be auto, true or false; got 'AUTO'"),
    ("trainer.backend=gpu", "backend"),
    ("trainer.checkpoint.monitor=test_acc", "never chooses"),
    ("trainer.checkpoint.monitor=val_acc", "val_fraction"),
    ("model.layers.0.mapping=sideways", r"model.layers\[0\].mapping must be one of"),
    ("model.layers.1.efd=central", r"model.layers\[1\].efd must be one of"),
    ("model.layers.0.lm_tau=0", r"model.layers\[0\].lm_tau must be a finite number > 0"),
    ("model.layers.0.alpha=nan", r"model.layers\[0\].alpha must be a finite number"),
    ("model.head.kind=reduction model.head.n=1", "model.head.n must be between 2 and 16"),
    ("model.regularizer.kind=spectral model.regularizer.weight=nan", "finite weight >= 0"),
    ("model.head.tau=inf", "model.head.tau must be a finite number > 0"),
    ("optimizer.lr=inf", "optimizer.lr must be a finite number > 0"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay must be a finite number >= 0"),
    ("optimizer.betas=[0.9]", r"optimizer.betas must be two numbers in \[0, 1\)"),
    ("optimizer.betas=[1.5,0.9]", r"optimizer.betas must be two numbers"),
    ("optimizer=sgd optimizer.momentum=-1", "optimizer.momentum must be a finite number >= 0"),
    ("scheduler.gamma=nan", "scheduler.gamma must be a finite number > 0"),
    ("scheduler=multistep scheduler.milestones=[-1,0]", "scheduler.milestones must be epochs >= 1"),
    ("scheduler=cosine scheduler.min_lr=-1", "scheduler.min_lr must be a finite number >= 0"),
    ("trainer.seed=200000000000000", r"trainer.seed must be an integer in 0..4294967295"),
    ("dataset.split_seed=-1", "dataset.split_seed must be an integer in 0"),
    ("optimizer.kind=lion", "optimizer.kind must be one of adam, adamw, sgd"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("scheduler.kind=warmup", "scheduler.kind"),
    ("model.regularizer.kind=l3", "regularizer"),
    ("model.head.kind=vote", "head.kind"),
    ("trainer.val_fraction=1.5", "val_fraction"),
    ("dataset.test_fraction=0", "test_fraction"),
    ("encoding.kind=binary", "encoding.kind"),
])
def test_config_values_are_checked_before_any_data_loads(override, words, compose_cfg, tmp_path, monkeypatch):
    def no_loading(cfg):
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr("dwn_train.prepare.load_dataset", no_loading)
    cfg = compose_cfg([*SMALL, "trainer.epochs=1", *override.split()])
    with pytest.raises(DWNError, match=words):
        train(cfg, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_width_that_groupsum_cannot_split_is_found_once_the_classes_are_known(compose_cfg, tmp_path):
    with pytest.raises(DWNError, match="GroupSum"):
        train(compose_cfg([*SMALL, "model.layers.1.out_features=205"]), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_layer_errors_are_the_layers_own_under_the_config_key(compose_cfg, tmp_path):
    import dwn_train as dwn

    with pytest.raises(DWNError) as library:
        dwn.LUTLayer(4, 2, n=0)
    with pytest.raises(DWNError) as config:
        train(compose_cfg([*SMALL, "model.layers.0.n=0"]), tmp_path)
    assert str(library.value).startswith("LUTLayer n must be an integer in 1..16")
    assert str(config.value) == "model.layers[0].n" + str(library.value)[len("LUTLayer n"):]


def test_the_step_is_chosen_once_and_the_objective_has_the_penalty(compose_cfg):
    from dwn_train.model import build_model
    from dwn_train.train import _make_step, _objective

    cfg = compose_cfg([*SMALL, "model.regularizer.kind=spectral", "model.regularizer.weight=0.5"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 64 * 3, 10)
    logits, labels = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    with_penalty = _objective(model, cfg.model.regularizer)(logits, labels, 0.25)
    plain = torch.nn.functional.cross_entropy(logits, labels, reduction="sum") * 0.25
    layers = [m for m in model.modules() if isinstance(m, dwn.LUTLayer)]
    expected = sum(spectral(m.luts.detach()) for m in layers)
    assert expected > 0 and torch.allclose(with_penalty.detach(), plain + 0.5 * expected)
    with_penalty.backward()  # the logits do not depend on the model: the tables' gradient is the penalty's
    for m in layers:
        luts = m.luts.detach().clone().requires_grad_()
        torch.autograd.backward(0.5 * spectral(luts))
        assert torch.allclose(m.luts.grad, luts.grad) and luts.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = _make_step(model, optimizer, _objective(model, cfg.model.regularizer), cfg.trainer, graphs=False)
    before = model[1].luts.detach().clone()
    loss, out = step((torch.rand(8, 192) > 0.5).float(), torch.randint(0, 10, (8,)), 1 / 8)
    assert out.shape == (8, 10) and loss.item() > 0 and not torch.equal(before, model[1].luts)


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


@pytest.mark.slow
def test_tensorboard_logger_writes_events(compose_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    train(compose_cfg([*SMALL, "trainer.epochs=1", "logger=tensorboard"]), tmp_path)
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["model.regularizer.kind=spectral", "model.regularizer.weight=0.01"],
                                   ["model.head.kind=reduction", "model.layers.1.out_features=320", "model.head.tau=0.5"]])
def test_regularizer_and_reduction_head_train_from_the_config(extra, plain_run, tmp_path):
    train(compose([*SMALL, "trainer.epochs=5", *extra]), tmp_path)
    assert _last_row(tmp_path)["train_loss"] != _last_row(plain_run)["train_loss"]
    assert _last_row(tmp_path)["test_acc"] > 0.5
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    assert any(".levels." in k for k in state) == ("model.head.kind=reduction" in extra)
    if "model.regularizer.kind=spectral" in extra:  # the penalty made the tables smoother than plain training's
        plain = load_checkpoint(plain_run / "checkpoints" / "last.pt")["model"]
        smoothness = lambda s: sum(spectral(v.float()) for k, v in s.items() if k.endswith("luts"))
        assert smoothness(state) < 0.5 * smoothness(plain)  # measured: 0.14


def test_only_a_strict_improvement_replaces_the_best():
    from dwn_train.train import improves

    assert improves(0.5, None, True) and improves(0.2, 0.3, False) and improves(0.4, 0.3, True)
    assert not improves(None, 0.1, True) and not improves(None, None, False)
    assert not improves(0.3, 0.2, False) and not improves(0.2, 0.3, True)
    assert not improves(0.3, 0.3, True) and not improves(0.3, 0.3, False)  # a tie keeps the earlier epoch


def test_per_class_confusion_and_scores_by_hand():
    from dwn_train.scoring import per_class

    confusion, rows = per_class(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0]), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]  # label x prediction
    assert [(r["support"], r["precision"], r["recall"], r["f1"]) for r in rows] == [
        (2, 0.5, 0.5, 0.5), (1, 0.5, 1.0, 2 / 3), (1, 0.0, 0.0, 0.0)]


def test_scoring_an_empty_share_is_zero_not_an_error():
    from dwn_train.scoring import evaluate

    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    accuracy, loss, preds = evaluate(model, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 16)
    assert (accuracy, loss, len(preds)) == (0.0, 0.0, 0)


@pytest.mark.parametrize("override, words", [
    ("encoding.num_bits=100000000000", "the encoded data .* needs about .* GiB, more than this machine's"),
    ("model.layers.1.out_features=100000000000", r"the model \(parameters, gradients and optimizer state\) needs"),
])
def test_sizes_no_machine_holds_are_refused_before_allocating(compose_cfg, tmp_path, override, words):
    with pytest.raises(DWNError, match=words):
        train(compose_cfg([*SMALL, "trainer.epochs=1", override]), tmp_path)




def test_off_a_terminal_a_long_epoch_logs_its_progress_as_it_goes(run_cli, tmp_path, monkeypatch):
    """nohup, SLURM logs, CI: no live bar, so a line every console.PROGRESS_EVERY seconds (here
    every batch) with the samples done, the rate and the time left, in the log and on stdout."""
    import re

    from dwn_train import console
    from helpers.runs import TINY

    quiet = tmp_path / "quiet"
    assert run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={quiet}")[0] == 0
    assert "samples (" not in (quiet / "train.log").read_text()  # an epoch shorter than the cadence: no lines
    monkeypatch.setattr(console, "PROGRESS_EVERY", 0.0)
    code, out, err = run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err
    lines = re.findall(r"epoch 1/1: ([\d,]+)/([\d,]+) samples \(\d+ %\)  loss [\d.]+  acc [\d.]+  [\d,]+ samples/s  "
                       r"about [\d,]+ s left in this epoch", (tmp_path / "run" / "train.log").read_text())
    done = [int(seen.replace(",", "")) for seen, _ in lines]
    total = int(lines[0][1].replace(",", ""))
    batches = -(-total // 64)
    assert len(done) == batches - 1 and done == sorted(done) and done[-1] < total  # every batch but the last
    assert "samples/s  about" in out
