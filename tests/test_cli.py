"""The console scripts: real subprocess runs (train, -m sweep, eval, SIGKILL + resume) and the
exit status and message of user errors."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from conftest import SMALL

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_cmd(*overrides, flags=()):
    return ["dwn-train", *flags, *SMALL, "trainer.threads=1", *overrides]


@pytest.mark.slow
def test_train_then_eval_reproduces_accuracy(tmp_path):
    run = tmp_path / "run"
    subprocess.run(_train_cmd("trainer.epochs=2", f"hydra.run.dir={run}"), check=True, env=ENV, capture_output=True)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()
    ev = tmp_path / "eval"
    subprocess.run(["dwn-eval", f"checkpoint={run}/checkpoints/last.pt", f"hydra.run.dir={ev}", "save_predictions=true"],
                   check=True, env=ENV, capture_output=True)
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(_rows(run)[-1]["test_acc"], abs=1e-6)
    lines = (ev / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,label,prediction,label_name,prediction_name" and len(lines) == metrics["samples"] + 1


@pytest.mark.slow
def test_multirun_sweep_writes_one_folder_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    subprocess.run(_train_cmd("trainer.epochs=1", "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={sweep}", flags=["-m"]),
                   check=True, env=ENV, capture_output=True)
    for job in ("0", "1"):
        assert len(_rows(sweep / job)) == 1
    assert json.loads((sweep / "1" / "metrics.jsonl").read_text())["lr"] == 0.02


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    common = ("model=digits_small", "trainer.batch_size=32", "trainer.epochs=6")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    subprocess.run(_train_cmd(*common, f"hydra.run.dir={whole}"), check=True, env=ENV, capture_output=True)
    proc = subprocess.Popen(_train_cmd(*common, f"hydra.run.dir={broken}"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (broken / "checkpoints" / "last.pt").is_file():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(broken / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert killed_at < 6, "the run finished before it could be killed"
    subprocess.run(_train_cmd(*common, "trainer.resume=auto", f"hydra.run.dir={broken}"), check=True, env=ENV,
                   capture_output=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("samples_per_s", "seconds")} for r in rows]
    assert strip(_rows(broken)) == strip(_rows(whole))
    assert (broken / "metrics.csv").read_text().count("\n") == 7  # header + 6 epochs, no duplicates
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(broken / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("which, overrides, words", [
    ("train", ["dataset=nosuch"], "nosuch"),
    ("train", ["trainer.batch_size=0"], "trainer.batch_size must be a positive integer"),
    ("train", ["trainer.epochs=many"], "epochs"),
    ("train", ["trainer.cuda_graphs=maybe"], "trainer.cuda_graphs must be auto, true or false; got 'maybe'"),
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
    result = subprocess.run(_train_cmd("trainer.epochs=1", "optimizer.lr=0.01,0.02", "hydra/launcher=local",
                                       f"hydra.sweep.dir={sweep}", flags=["-m"]),
                            check=True, env=ENV, capture_output=True, text=True)
    assert "Joblib" in result.stdout + result.stderr
    assert [len(_rows(sweep / job)) for job in ("0", "1")] == [1, 1]


@pytest.mark.slow
def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    shown = subprocess.run(["dwn-train", "hydra/launcher=slurm", "--cfg", "hydra"], check=True, env=ENV,
                           capture_output=True, text=True).stdout
    assert "SlurmLauncher" in shown and "gpus_per_node: 1" in shown


# ---- faults a user can cause: one sentence, the right exit status, no traceback, nothing lost ----

TINY = [*SMALL, "model.layers.0.out_features=60", "model.layers.1.out_features=30", "trainer.epochs=2"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from dwn_train.train import train
    from conftest import compose

    run = tmp_path_factory.mktemp("small_run")
    train(compose(TINY), run)
    return run


def _clean(code, out, err, want_code, words):
    assert code == want_code, (code, out, err)
    assert words in out + err, out + err
    assert "Traceback" not in out + err


def test_unknown_keys_are_refused_even_with_plus(run_cli, tmp_path):
    _clean(*run_cli("train", *SMALL, "+trainer.epoch=3", f"hydra.run.dir={tmp_path}"), 2,
           "unknown key trainer.epoch: dwn-train has no such setting")
    _clean(*run_cli("eval", "checkpoint=x.pt", "+splits=val", f"hydra.run.dir={tmp_path}/e"), 2, "unknown key splits")


def test_resuming_with_fewer_epochs_says_so_and_the_log_says_why(small_run, run_cli):
    before = (small_run / "checkpoints" / "last.pt").read_bytes()
    _clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.resume=auto", f"hydra.run.dir={small_run}"), 2,
           "has already trained 2 epochs and trainer.epochs=1: nothing is left to train")
    assert "nothing is left to train" in (small_run / "train.log").read_text()
    assert (small_run / "checkpoints" / "last.pt").read_bytes() == before


def test_resuming_with_another_optimizer_is_refused(small_run, run_cli, tmp_path):
    _clean(*run_cli("train", *TINY, "trainer.epochs=3", "optimizer=sgd", f"trainer.resume={small_run}/checkpoints/last.pt",
                    f"hydra.run.dir={tmp_path}"), 2, "was trained with optimizer.kind=adam (today sgd)")


def test_resuming_with_other_settings_names_them_and_how_to_continue(run_cli, tmp_path):
    """A resume that forgot a job's overrides (seed, split, head) would silently continue another
    run: it is refused, naming each setting, nothing of the run changes (not even Hydra's record of
    its settings), and the overrides it names make the same command resume."""
    run = tmp_path / "run"
    job = ["trainer.seed=5", "trainer.val_fraction=0.1", "model.head.tau=2"]
    _clean(*run_cli("train", *TINY, *job, f"hydra.run.dir={run}"), 0, "dwn-train")
    kept = {name: (run / name).read_bytes() for name in ("checkpoints/last.pt", ".hydra/config.yaml",
                                                         ".hydra/overrides.yaml", "metrics.jsonl")}
    code, out, err = run_cli("train", *TINY, "trainer.epochs=3", "trainer.resume=auto", f"hydra.run.dir={run}")
    _clean(code, out, err, 2, "trainer.seed=5 (today 0)")
    said = next(line for line in (out + err).splitlines() if "error:" in line)
    for words in ("trainer.val_fraction=0.1 (today 0.0)", "model.head.tau=2.0 (today 3.3333333333333335)", "add `"):
        assert words in said, said
    assert "trainer.epochs" not in said  # training longer is what resuming is for
    assert {name: (run / name).read_bytes() for name in kept} == kept
    fix = said.split("add `")[1].split("`")[0].split()
    assert sorted(fix) == ["model.head.tau=2.0", "trainer.seed=5", "trainer.val_fraction=0.1"], fix
    code, out, err = run_cli("train", *TINY, "trainer.epochs=3", *fix, "trainer.resume=auto", f"hydra.run.dir={run}",
                             "trainer.threads=1")
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_run_refused_after_it_began_rewriting_the_folder_keeps_its_own_settings(run_cli, tmp_path, monkeypatch):
    """Hydra's record of a folder's settings is put back only for a command refused before it wrote
    anything else there: a fresh run that emptied the old metrics and then failed is the folder's run."""
    from dwn_train import train

    run = tmp_path / "run"
    _clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.seed=5", f"hydra.run.dir={run}"), 0, "dwn-train")

    def refuse(*args, **kwargs):
        raise train.DWNError("a late bad value.")

    monkeypatch.setattr(train, "_make_step", refuse)
    _clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.seed=6", "trainer.resume=overwrite",
                    f"hydra.run.dir={run}"), 2, "a late bad value")
    assert (run / "metrics.jsonl").read_text() == ""  # the new run emptied the old run's records
    assert "trainer.seed=6" in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize("which, override, words", [
    ("train", "trainer.epochs=${oops}", "trainer.epochs cannot be resolved: Interpolation key 'oops' not found"),
    ("train", "trainer.epochs=${dataset.kind}", "trainer.epochs cannot be resolved: While dereferencing"),
    ("train", "trainer.device=${oc.env:DWN_NO_SUCH_VARIABLE}", "trainer.device cannot be resolved"),
    ("eval", "checkpoint=${oops}", "checkpoint cannot be resolved"),
])
def test_an_interpolation_that_does_not_resolve_is_one_sentence(run_cli, tmp_path, which, override, words):
    extra = [*TINY] if which == "train" else []
    _clean(*run_cli(which, *extra, override, f"hydra.run.dir={tmp_path}"), 2, words)


@pytest.mark.parametrize("which", ["eval", "export"])
def test_eval_and_export_say_a_checkpoint_keeps_its_data_set(run_cli, which):
    _clean(*run_cli(which, "checkpoint=x.pt", "dataset=breast_cancer"), 2,
           "dataset= cannot choose a data set here: a checkpoint is scored on the data set it was trained on")


@pytest.mark.parametrize("empty", ["hydra.run.dir=", "hydra.run.dir=''"])
def test_an_empty_run_folder_is_refused_not_the_working_directory(run_cli, tmp_path, empty):
    _clean(*run_cli("train", *TINY, empty), 2, "hydra.run.dir is empty; name a folder")


def test_run_folders_are_read_as_hydra_reads_them():
    from dwn_train.cli import _named_dir

    assert [_named_dir([f"hydra.run.dir={v}"], "hydra.run.dir") for v in ("123", "1e3", "true", "'/a b'", "${now:%H}")] \
        == ["123", "1000.0", "True", "/a b", None]


def test_a_quoted_run_folder_is_the_one_held_and_its_record_kept(run_cli, tmp_path, monkeypatch):
    """hydra.run.dir='DIR' (Hydra's quotes, for a path with odd characters) names DIR: the early lock
    and the .hydra record of a refused resume are about DIR, not a folder named with the quotes."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "q a"
    _clean(*run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir='{run}'"), 0, "dwn-train")
    record = (run / ".hydra" / "overrides.yaml").read_bytes()
    code, out, err = run_cli("train", *TINY, "trainer.epochs=2", "optimizer.lr=0.5", "trainer.resume=auto",
                             f"hydra.run.dir='{run}'")
    _clean(code, out, err, 2, "was trained with optimizer.lr=0.01")
    assert (run / ".hydra" / "overrides.yaml").read_bytes() == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q a"]  # no stray "'...'" folder with a .lock


def test_a_fresh_run_does_not_replace_the_run_a_folder_holds(run_cli, tmp_path):
    """Without trainer.resume a second run in a named folder would empty its metrics and replace its
    checkpoints: refused, nothing changed; resume=auto without a last.pt (save_last=false) likewise;
    trainer.resume=overwrite starts afresh on purpose."""
    run = tmp_path / "run"
    _clean(*run_cli("train", *TINY, "trainer.epochs=1", "trainer.checkpoint.save_last=false", f"hydra.run.dir={run}"),
           0, "dwn-train")
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log" and p.name != ".lock"}
    assert run / "checkpoints" / "best.pt" in kept and run / "metrics.jsonl" in kept
    code, out, err = run_cli("train", *TINY, "trainer.epochs=1", "optimizer.lr=0.001", f"hydra.run.dir={run}")
    _clean(code, out, err, 2, f"the run folder {run} already holds a run (metrics.jsonl, checkpoints/best.pt)")
    assert "trainer.resume=overwrite" in err
    code, out, err = run_cli("train", *TINY, "trainer.epochs=2", "trainer.resume=auto", f"hydra.run.dir={run}")
    _clean(code, out, err, 2, "trainer.resume=auto found no checkpoints/last.pt")
    assert {p: p.read_bytes() for p in kept} == kept
    assert "continue from one of its checkpoints with trainer.resume=PATH" in err  # no last.pt to auto-resume
    # overwrite removes the old run's records first: its best.pt must not outlive it when this run keeps none
    _clean(*run_cli("train", *TINY, "trainer.epochs=1", "optimizer.lr=0.001", "trainer.resume=overwrite",
                    "trainer.checkpoint.save_best=false", f"hydra.run.dir={run}"), 0, "dwn-train")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]
    assert "optimizer.lr=0.001" in (run / ".hydra" / "overrides.yaml").read_text()
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]


def test_the_ctrl_c_advice_names_the_checkpoint_on_disk(tmp_path):
    from dwn_train.train import _interrupted

    run = tmp_path / "new"
    elsewhere = _interrupted({"epoch": 6, "step": 40, "saved": (5, tmp_path / "old" / "last.pt")}, run)
    assert f"the last checkpoint is epoch 5 ({tmp_path / 'old' / 'last.pt'})" in elsewhere
    assert f"`dwn-train trainer.resume={tmp_path / 'old' / 'last.pt'} hydra.run.dir={run}`" in elsewhere
    here = _interrupted({"epoch": 6, "step": 40, "saved": (6, run / "checkpoints" / "last.pt")}, run,
                        ["trainer.seed=1", "scheduler.milestones=[24,48]"])
    # the run's own settings are part of the command (a resume without them is refused), quoted for the shell
    assert f"`dwn-train trainer.seed=1 'scheduler.milestones=[24,48]' trainer.resume=auto hydra.run.dir={run}`" in here


def test_the_ctrl_c_advice_is_a_command_the_shell_reads_back(tmp_path, monkeypatch):
    from dwn_train.train import _config_flags, _interrupted

    from hydra.core.override_parser.overrides_parser import OverridesParser

    run = tmp_path / "my rüns" / "it's \\" / "${x}"  # a space for the shell; the rest for Hydra's grammar
    said = _interrupted({"epoch": 2, "step": 9, "saved": (2, run / "checkpoints" / "last.pt")}, run,
                        ["--config-name", "my train", "trainer.seed=1"])
    words = shlex.split(said.split("resume with `")[1].split("`")[0])
    assert words[:5] == ["dwn-train", "--config-name", "my train", "trainer.seed=1", "trainer.resume=auto"]
    value = OverridesParser.create().parse_override(words[5]).value()
    assert OmegaConf.create({"dir": value}).dir == str(run)  # as Hydra resolves it (\${ is a literal ${)
    assert words[5].startswith("hydra.run.dir=") and len(words) == 6
    plain = _interrupted({"epoch": 2, "step": 9, "saved": (1, tmp_path / "old.pt")}, tmp_path / "plain-run_1")
    assert f"trainer.resume={tmp_path / 'old.pt'} hydra.run.dir={tmp_path / 'plain-run_1'}`" in plain  # bare
    # the flags that choose the configuration are kept, in both spellings; settings and the rest are not flags
    assert _config_flags(["-cn", "mine", "--config-dir=conf x", "trainer.seed=1", "--multirun"]) == \
        ["-cn", "mine", "--config-dir=conf x"]
    # two nodes of four ranks: torchrun is told both, and that every node runs it
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    said = _interrupted({"epoch": 2, "step": 9, "saved": (2, run / "checkpoints" / "last.pt")}, run)
    assert "`torchrun --nnodes=2 --nproc_per_node=4 -m dwn_train.cli trainer.resume=auto " in said
    assert said.endswith("on each of the 2 nodes, with the rendezvous flags it was started with.")


def test_a_job_run_again_in_its_folder_forgets_its_old_failure(run_cli, tmp_path):
    (tmp_path / "failed.json").write_text('{"exit_code": 1, "error": "disk full"}')
    _clean(*run_cli("train", *TINY, "trainer.epochs=1", f"hydra.run.dir={tmp_path}"), 0, "dwn-train")
    assert not (tmp_path / "failed.json").exists()


def test_resuming_on_another_data_set_names_both(small_run, run_cli, tmp_path):
    _clean(*run_cli("train", *TINY, "trainer.epochs=3", "dataset=breast_cancer",
                    f"trainer.resume={small_run}/checkpoints/last.pt",
                    f"hydra.run.dir={tmp_path}"), 2, "dataset.kind=digits (today breast_cancer)")


@pytest.mark.parametrize("which", ["eval", "export"])
def test_checkpoints_that_do_not_fit_their_config_are_one_sentence(which, small_run, run_cli, tmp_path):
    from dwn_train.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(small_run / "checkpoints" / "last.pt")
    payload["config"]["model"]["layers"][1]["out_features"] = 40
    save_checkpoint(payload, tmp_path / "wrong.pt")
    del payload["config"]
    save_checkpoint(payload, tmp_path / "bare.pt")
    extra = ["format=json"] if which == "export" else []
    _clean(*run_cli(which, f"checkpoint={tmp_path}/wrong.pt", *extra, f"hydra.run.dir={tmp_path}/a"), 2,
           "does not fit the model its config describes")
    _clean(*run_cli(which, f"checkpoint={tmp_path}/bare.pt", *extra, f"hydra.run.dir={tmp_path}/b"), 2,
           "is damaged or incomplete: no 'config' entry")


def test_eval_names_classes_and_finds_a_moved_csv(run_cli, tmp_path, monkeypatch):
    from dwn_train.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{i % 9},{(i * 7) % 5},{'yes' if i % 9 > 4 else 'no'}\n" for i in range(120))
    (tmp_path / "data.csv").write_text("a,b,answer\n" + rows)
    csv_model = ["dataset=csv", "dataset.path=data.csv", "dataset.target=answer", "model=breast_cancer_small",
                 "trainer.epochs=2", "trainer.plot=false"]
    _clean(*run_cli("train", *csv_model, "hydra.run.dir=run"), 0, "dwn-train")
    stored = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert stored["config"]["dataset"]["path"] == str(tmp_path / "data.csv")  # absolute
    assert stored["data"]["class_names"] == ["no", "yes"]
    (tmp_path / "moved").mkdir()
    (tmp_path / "data.csv").rename(tmp_path / "moved" / "data.csv")
    _clean(*run_cli("eval", "checkpoint=run/checkpoints/last.pt", "hydra.run.dir=ev1"), 2, "does not exist")
    code, out, err = run_cli("eval", "checkpoint=run/checkpoints/last.pt", "dataset.path=moved/data.csv",
                             "save_predictions=true", "engine=packed", "hydra.run.dir=ev2")
    _clean(code, out, err, 0, str(tmp_path / "ev2" / "metrics.json"))
    assert "yes" in out and "loss" not in out  # class names in the table; the packed engine has no loss
    lines = (tmp_path / "ev2" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "index,label,prediction,label_name,prediction_name"
    assert lines[1].split(",")[3] in ("no", "yes")
    (tmp_path / "wide.csv").write_text("a,b,c,answer\n" + "".join(f"{i},{i % 3},{i % 5},{i % 2}\n" for i in range(30)))
    _clean(*run_cli("eval", "checkpoint=run/checkpoints/last.pt", "dataset.path=wide.csv", "hydra.run.dir=ev3"), 2,
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


def test_a_run_folder_that_cannot_be_made_is_exit_1(run_cli, tmp_path):
    (tmp_path / "file").write_text("in the way")
    _clean(*run_cli("train", *SMALL, f"hydra.run.dir={tmp_path}/file/run"), 1, "is a file, not a folder")


@pytest.mark.slow
def test_a_second_run_in_a_live_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(_train_cmd("model=digits_small", "trainer.epochs=4", f"hydra.run.dir={run}"), env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / ".lock").is_file():
        time.sleep(0.05)
    time.sleep(0.5)
    second = subprocess.run(_train_cmd("trainer.epochs=1", "trainer.seed=9", f"hydra.run.dir={run}"), env=ENV,
                            capture_output=True, text=True)
    assert first.wait() == 0
    assert "trainer.seed=9" not in (run / ".hydra" / "overrides.yaml").read_text()  # refused before Hydra wrote
    assert second.returncode == 2 and "is in use by another running dwn-train" in second.stderr
    assert "Traceback" not in second.stderr
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3, 4]  # the first run's rows only


@pytest.mark.slow
def test_a_sweep_survives_a_bad_job_and_reports_it(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(_train_cmd("trainer.epochs=1", "model.layers.0.n=0,6", f"hydra.sweep.dir={sweep}",
                                       flags=["-m"]), env=ENV, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "1 of 2 sweep jobs failed" in result.stderr and "job 0: model.layers[0].n must be" in result.stderr
    assert "model.layers[0].n" in json.loads((sweep / "0" / "failed.json").read_text())["error"]
    assert len(_rows(sweep / "1")) == 1


@pytest.mark.slow
def test_ctrl_c_says_where_and_how_to_resume(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dwn_train.cli", *SMALL, "trainer.threads=1", "model=digits_small",
                             "trainer.batch_size=16", "trainer.epochs=1000", f"hydra.run.dir={run}"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "last.pt").is_file():
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be interrupted"  # (1000 epochs: never, in time)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert f"the last checkpoint is epoch {saved}" in err
    assert "resume with `dwn-train dataset=digits model=digits_small " in err  # the run's settings, in order
    assert f"trainer.threads=1 model=digits_small trainer.batch_size=16 trainer.epochs=1000 trainer.resume=auto " \
           f"hydra.run.dir={run}`" in err


@pytest.mark.slow
def test_tables_off_a_terminal_keep_long_paths_whole(tmp_path):
    run = tmp_path / ("a-rather-long-folder-name-" * 4) / "run"
    result = subprocess.run(_train_cmd("trainer.epochs=1", f"hydra.run.dir={run}"), env=ENV, capture_output=True,
                            text=True, check=True)
    assert str(run) in result.stdout and "…" not in result.stdout


def test_an_eval_sweep_counts_its_jobs_and_writes_no_training_summary(small_run, run_cli, tmp_path):
    good = small_run / "checkpoints" / "last.pt"
    code, out, err = run_cli("eval", "-m", f"checkpoint={good},{tmp_path / 'missing.pt'}",
                             f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 2 and "1 of 2 sweep jobs failed" in err and "job 1:" in err, err
    assert "Traceback" not in out + err
    assert not (tmp_path / "sweep" / "summary.csv").exists()  # no training curves to pool
