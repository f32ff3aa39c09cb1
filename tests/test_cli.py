"""The console scripts: real subprocess runs (train, -m sweep, eval, SIGKILL + resume) and the
exit status and message of user errors."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

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
    assert lines[0] == "index,label,prediction" and len(lines) == metrics["samples"] + 1


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
    ("eval", ["checkpoint=/no/such/file.pt"], "does not exist"),
    ("eval", [], "checkpoint"),
])
def test_user_errors_exit_2_without_traceback(which, overrides, words, run_cli, tmp_path):
    code, out, err = run_cli(which, *SMALL * (which == "train"), *overrides, f"hydra.run.dir={tmp_path}/r")
    assert code == 2
    assert words in out + err and "Traceback" not in out + err


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
