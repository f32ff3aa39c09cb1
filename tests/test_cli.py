"""The console scripts: real subprocess runs (train, -m sweep, eval, launchers) and the exit status
and message of user errors. (Run folders, resume, Ctrl-C and the checks before Hydra have their own
files: tests/test_run_*.py.)"""

import importlib.util
import json
import subprocess

import pytest

from helpers.runs import ENV, SMALL, TINY, clean, metric_rows, train_cmd


@pytest.mark.slow
def test_train_then_eval_reproduces_accuracy(tmp_path):
    run = tmp_path / "run"
    subprocess.run(train_cmd("trainer.epochs=2", f"hydra.run.dir={run}"), check=True, env=ENV, capture_output=True)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    ev = tmp_path / "eval"
    subprocess.run(["dwn-eval", f"checkpoint={run}/checkpoints/last.pt", f"hydra.run.dir={ev}", "save_predictions=true"],
                   check=True, env=ENV, capture_output=True)
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(metric_rows(run)[-1]["test_acc"], abs=1e-6)
    lines = (ev / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,label,prediction,label_name,prediction_name" and len(lines) == metrics["samples"] + 1


@pytest.mark.slow
def test_multirun_sweep_writes_one_folder_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    subprocess.run(train_cmd("trainer.epochs=1", "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={sweep}", flags=["-m"]),
                   check=True, env=ENV, capture_output=True)
    for job in ("0", "1"):
        assert len(metric_rows(sweep / job)) == 1
    assert json.loads((sweep / "1" / "metrics.jsonl").read_text())["lr"] == 0.02


@pytest.mark.parametrize("which, overrides, words", [
    ("train", ["dataset=nosuch"], "nosuch"),
    ("train", ["trainer.batch_size=0"], "trainer.batch_size must be a positive integer"),
    ("train", ["trainer.epochs=many"], "epochs"),
    ("train", ["trainer.cuda_graphs=maybe"], "trainer.cuda_graphs must be auto, true or false; got 'maybe'"),
    ("train", ["trainer.cuda_graphs=null"], "trainer.cuda_graphs must be auto, true or false; got None"),
    ("train", ["trainer.cuda_graphs=true", "trainer.device=cpu"], "trainer.cuda_graphs=true needs a CUDA device"),
    ("train", ["model.head.kind=reduction", "model.head.efd=fast"], "model.head.efd must be one of exponential, paper, fd"),
    ("eval", ["checkpoint=/no/such/file.pt"], "does not exist"),
    ("eval", [], "checkpoint"),
    ("export", ["checkpoint=/no/such.pt", "format=verilog", "fpga_timeout=0"], "fpga_timeout must be a positive number"),
    ("export", ["checkpoint=/no/such.pt", "fpga_timeout=soon"], "fpga_timeout"),
])
def test_user_errors_exit_2_without_traceback(which, overrides, words, run_cli, tmp_path):
    code, out, err = run_cli(which, *SMALL * (which == "train"), *overrides, f"hydra.run.dir={tmp_path}/r")
    assert code == 2
    assert words in out + err and "Traceback" not in out + err


def test_hydra_flags_it_refuses_together_are_exit_2_without_traceback(run_cli):
    code, out, err = run_cli("train", "dataset=digits", "-m", "--cfg", "hydra")
    assert code == 2 and "Only one of --run, --multirun, --cfg" in err and "Traceback" not in out + err


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    result = subprocess.run(train_cmd("trainer.epochs=1", "optimizer.lr=0.01,0.02", "hydra/launcher=local",
                                       f"hydra.sweep.dir={sweep}", flags=["-m"]),
                            check=True, env=ENV, capture_output=True, text=True)
    assert "Joblib" in result.stdout + result.stderr
    assert [len(metric_rows(sweep / job)) for job in ("0", "1")] == [1, 1]


@pytest.mark.slow
def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    shown = subprocess.run(["dwn-train", "hydra/launcher=slurm", "--cfg", "hydra"], check=True, env=ENV,
                           capture_output=True, text=True).stdout
    assert "SlurmLauncher" in shown and "gpus_per_node: 1" in shown


# ---- faults a user can cause: one sentence, the right exit status, no traceback, nothing lost ----

def test_unknown_keys_are_refused_even_with_plus(run_cli, tmp_path):
    clean(*run_cli("train", *SMALL, "+trainer.epoch=3", f"hydra.run.dir={tmp_path}"), 2,
           "unknown key trainer.epoch: dwn-train has no such setting")
    clean(*run_cli("eval", "checkpoint=x.pt", "+splits=val", f"hydra.run.dir={tmp_path}/e"), 2, "unknown key splits")


@pytest.mark.parametrize("which, override, words", [
    ("train", "trainer.epochs=${oops}", "trainer.epochs cannot be resolved: Interpolation key 'oops' not found"),
    ("train", "trainer.epochs=${dataset.kind}", "trainer.epochs cannot be resolved: While dereferencing"),
    ("train", "trainer.device=${oc.env:DWN_NO_SUCH_VARIABLE}", "trainer.device cannot be resolved"),
    ("eval", "checkpoint=${oops}", "checkpoint cannot be resolved"),
])
def test_an_interpolation_that_does_not_resolve_is_one_sentence(run_cli, tmp_path, which, override, words):
    extra = [*TINY] if which == "train" else []
    clean(*run_cli(which, *extra, override, f"hydra.run.dir={tmp_path}"), 2, words)


@pytest.mark.parametrize("which", ["eval", "export"])
def test_checkpoints_that_do_not_fit_their_config_are_one_sentence(which, tiny_run, run_cli, tmp_path):
    from dwn_train.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    payload["config"]["model"]["layers"][1]["out_features"] = 40
    save_checkpoint(payload, tmp_path / "wrong.pt")
    del payload["config"]
    save_checkpoint(payload, tmp_path / "bare.pt")
    extra = ["format=json"] if which == "export" else []
    clean(*run_cli(which, f"checkpoint={tmp_path}/wrong.pt", *extra, f"hydra.run.dir={tmp_path}/a"), 2,
           "does not fit the model its config describes")
    clean(*run_cli(which, f"checkpoint={tmp_path}/bare.pt", *extra, f"hydra.run.dir={tmp_path}/b"), 2,
           "is damaged or incomplete: no 'config' entry")


def test_eval_names_classes_and_finds_a_moved_csv(run_cli, tmp_path, monkeypatch):
    from dwn_train.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{i % 9},{(i * 7) % 5},{'yes' if i % 9 > 4 else 'no'}\n" for i in range(120))
    (tmp_path / "data.csv").write_text("a,b,answer\n" + rows)
    csv_model = ["dataset=csv", "dataset.path=data.csv", "dataset.target=answer", "model=breast_cancer_small",
                 "trainer.epochs=2", "trainer.plot=false"]
    clean(*run_cli("train", *csv_model, "hydra.run.dir=run"), 0, "dwn-train")
    stored = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert stored["config"]["dataset"]["path"] == str(tmp_path / "data.csv")  # absolute
    assert stored["data"]["class_names"] == ["no", "yes"]
    (tmp_path / "moved").mkdir()
    (tmp_path / "data.csv").rename(tmp_path / "moved" / "data.csv")
    clean(*run_cli("eval", "checkpoint=run/checkpoints/last.pt", "hydra.run.dir=ev1"), 2, "does not exist")
    code, out, err = run_cli("eval", "checkpoint=run/checkpoints/last.pt", "dataset.path=moved/data.csv",
                             "save_predictions=true", "engine=packed", "hydra.run.dir=ev2")
    clean(code, out, err, 0, str(tmp_path / "ev2" / "metrics.json"))
    assert "yes" in out and "loss" not in out  # class names in the table; the packed engine has no loss
    lines = (tmp_path / "ev2" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,label,prediction,label_name,prediction_name"
    assert lines[1].split(",")[3] in ("no", "yes")
    (tmp_path / "wide.csv").write_text("a,b,c,answer\n" + "".join(f"{i},{i % 3},{i % 5},{i % 2}\n" for i in range(30)))
    clean(*run_cli("eval", "checkpoint=run/checkpoints/last.pt", "dataset.path=wide.csv", "hydra.run.dir=ev3"), 2,
           "was trained on data with feature shape (2,) and 2 classes, but dataset")


def test_help_lists_real_options_and_version_is_ours(run_cli):
    code, out, _ = run_cli("train", "--help")
    assert code == 0 and "train a Differentiable Weightless Neural Network" in out
    assert "optimizer: adam, adamw, sgd" in out and "base_" not in out and "powered by Hydra" not in out
    code, out, _ = run_cli("eval", "--help")
    assert code == 0 and "split: test" in out and "optimizer:" not in out and "mnist_2layer" not in out
    code, out, _ = run_cli("export", "--help")
    assert code == 0 and "format: verilog" in out and "optimizer:" not in out
    code, out, _ = run_cli("train", "--version")
    assert code == 0 and out.startswith("dwn-train ") and "Hydra" not in out


@pytest.mark.slow
def test_a_sweep_survives_a_bad_job_and_reports_it(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(train_cmd("trainer.epochs=1", "model.layers.0.n=0,6", f"hydra.sweep.dir={sweep}",
                                       flags=["-m"]), env=ENV, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "1 of 2 sweep jobs failed" in result.stderr and "job 0: model.layers[0].n must be" in result.stderr
    assert "model.layers[0].n" in json.loads((sweep / "0" / "failed.json").read_text())["error"]
    assert len(metric_rows(sweep / "1")) == 1


@pytest.mark.slow
def test_tables_off_a_terminal_keep_long_paths_whole(tmp_path):
    run = tmp_path / ("a-rather-long-folder-name-" * 4) / "run"
    result = subprocess.run(train_cmd("trainer.epochs=1", f"hydra.run.dir={run}"), env=ENV, capture_output=True,
                            text=True, check=True)
    assert str(run) in result.stdout and "…" not in result.stdout


def test_an_eval_sweep_counts_its_jobs_and_writes_no_training_summary(tiny_run, run_cli, tmp_path):
    good = tiny_run / "checkpoints" / "last.pt"
    code, out, err = run_cli("eval", "-m", f"checkpoint={good},{tmp_path / 'missing.pt'}",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 2 and "1 of 2 sweep jobs failed" in err and "job 1:" in err, err
    assert "Traceback" not in out + err
    assert not (tmp_path / "sweep" / "summary.csv").exists()  # no training curves to pool


def test_the_entry_point_reads_torchruns_environment_and_hands_it_down(monkeypatch):
    """cli reads WORLD_SIZE, RANK and LOCAL_WORLD_SIZE (nothing below it does): the Ctrl-C command
    of a run on two nodes of four ranks is built from them."""
    from dwn_train import cli
    from dwn_train.run.command import Command

    for name in ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert cli._torchrun() == (1, 0, 0)  # no torchrun
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    world, rank, local = cli._torchrun()
    assert (world, rank, local) == (8, 5, 4)
    command = Command.launched(["trainer.seed=1"], ["trainer.seed=1"], world, local)
    assert (command.ranks, command.nodes) == (4, 2)


def test_tensorboard_without_its_package_is_refused_before_the_folder_is_touched(run_cli, tmp_path):
    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed")
    clean(*run_cli("train", *SMALL, "logger=tensorboard", f"hydra.run.dir={tmp_path}/r"), 2,
          "logger=tensorboard needs the tensorboard package: pip install tensorboard.")
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_a_command_refused_before_it_starts_leaves_no_folder_it_made(run_cli, tiny_run, tmp_path, monkeypatch):
    """The folder named on the command line (and the folders above it it made), and the dated
    default folder of dwn-train, dwn-eval and dwn-export, are gone; a folder that was there stays."""
    clean(*run_cli("train", *TINY, "trainer.epochs=-1", f"hydra.run.dir={tmp_path}/new/run"), 2,
          "trainer.epochs must be a positive integer")
    assert not (tmp_path / "new").exists()
    monkeypatch.chdir(tmp_path)
    clean(*run_cli("train", *TINY, "trainer.epochs=-1"), 2, "trainer.epochs must be a positive integer")
    clean(*run_cli("eval", f"checkpoint={tmp_path}/none.pt"), 2, "none.pt")
    clean(*run_cli("export", f"checkpoint={tmp_path}/none.pt"), 2, "none.pt")
    assert not (tmp_path / "outputs").exists()
    (tmp_path / "outputs" / "train").mkdir(parents=True)  # made by an earlier run: stays
    clean(*run_cli("train", *TINY, "trainer.epochs=-1"), 2, "trainer.epochs must be a positive integer")
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["train"] and not any((tmp_path / "outputs" / "train").iterdir())
    kept = tmp_path / "kept"
    kept.mkdir()
    clean(*run_cli("train", *TINY, "trainer.epochs=-1", f"hydra.run.dir={kept}"), 2, "positive integer")
    assert kept.is_dir()
    # a run that started keeps its folder whatever happens after
    assert run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={tmp_path}/ran")[0] == 0
    assert (tmp_path / "ran" / "checkpoints" / "last.pt").is_file()


def test_what_hydra_or_a_sweeper_would_report_with_a_traceback_is_one_sentence(run_cli, tmp_path):
    # a value Hydra cannot convert: its several-line report as one sentence with the override
    clean(*run_cli("train", "trainer.batch_size=1e12", f"hydra.run.dir={tmp_path}/a"), 2,
          "dwn-train: error: trainer.batch_size=1e12: Value '1000000000000.0' of type 'float' could not be converted "
          "to Integer.")
    # a config group option that does not exist: the options, without Hydra's search path
    clean(*run_cli("train", "model=nope", f"hydra.run.dir={tmp_path}/a"), 2,
          "dwn-train: error: In 'train': Could not find 'model/nope'; Available options in 'model': "
          "breast_cancer_small, digits_small, mnist_2layer.")
    assert not (tmp_path / "a").exists()  # the folder named for the run was made before Hydra composed: removed
    # a run folder name longer than the file system allows
    clean(*run_cli("train", *TINY, f"hydra.run.dir={tmp_path}/{'a' * 300}"), 1,
          f"the run folder {tmp_path}/{'a' * 300} cannot be made (File name too long)")
    # a search space Optuna's sampler refuses: before any job, and no sweep folder is made
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    clean(*run_cli("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", *TINY,
                   "optimizer.lr=interval(0.1,0.01)", f"hydra.sweep.dir={tmp_path}/opt"), 2,
          "the Optuna sweeper cannot search this space: The `low` value must be smaller than or equal to the `high` "
          "value (low=0.1, high=0.01)")
    assert not (tmp_path / "opt").exists()


def test_a_batch_larger_than_the_training_set_says_what_it_does(run_cli, tmp_path):
    code, out, err = run_cli("train", *TINY, "trainer.epochs=1", "trainer.batch_size=100000", f"hydra.run.dir={tmp_path}")
    assert code == 0, err
    assert "trainer.batch_size=100000 is larger than the 1437 training samples: each epoch is one step on all of them" \
        in out + err
    assert metric_rows(tmp_path)[0]["epoch"] == 1
