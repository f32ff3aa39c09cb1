"""Sweep membership and a training sweep into a folder that holds runs (dwn_train/run/sweep.py)."""

import csv
import os
import time

import pytest

from dwn_train.errors import DWNError
from dwn_train.run import sweep
from dwn_train.run.folder import RunFolder
from helpers.runs import ONE_EPOCH


def test_a_sweep_folder_used_again_summarises_only_the_new_sweep(run_cli, tmp_path):
    assert run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}")[0] == 0
    # a skewed clock (a cluster file system) dates the old sweep's job 1 a day ahead: membership is
    # the sweep's id in each job folder, not file times
    ahead = time.time() + 86400
    for path in (tmp_path / "1").rglob("*"):
        os.utime(path, (ahead, ahead))
    # without trainer.resume the sweep is refused before any job runs: no job folder changes
    kept = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    code, _, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=2", f"hydra.sweep.dir={tmp_path}")
    assert code == 2 and f"the sweep folder {tmp_path} already holds runs (job folders 0, 1)" in err, err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == kept
    # job 0 again, replacing the old sweep's job 0 (on purpose: overwrite); job 1 is the old sweep's
    code, _, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=2", "trainer.resume=overwrite",
                           f"hydra.sweep.dir={tmp_path}")
    assert code == 0, err
    with (tmp_path / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["n"], row["jobs"]) for row in rows] == [("1", str(tmp_path / "0"))]


def test_a_sweep_without_hydra_files_in_its_jobs_is_still_summarised(run_cli, tmp_path):
    code, _, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", "hydra.output_subdir=null",
                           f"hydra.sweep.dir={tmp_path}")
    assert code == 0, err
    with (tmp_path / "summary.csv").open() as handle:
        assert [row["n"] for row in csv.DictReader(handle)] == ["2"]


def test_membership_is_the_sweeps_id_and_jobs_come_in_job_order(tmp_path):
    sweep.begin(tmp_path)
    for name in ("10", "2", "extra"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        sweep.join(tmp_path, RunFolder(tmp_path / name), tmp_path)
    (tmp_path / "old" / ".hydra").mkdir(parents=True)
    (tmp_path / "old" / ".sweep_id").write_text("an earlier sweep\n")
    (tmp_path / "empty").mkdir()  # no record of any command: not a job
    assert [p.name for p in sweep.members(tmp_path)] == ["2", "10", "extra"]
    (tmp_path / sweep.STARTED).unlink()  # no id to compare: every job folder
    assert [p.name for p in sweep.members(tmp_path)] == ["2", "10", "extra", "old"]


def test_a_sweep_meets_held_runs_by_the_same_rule_as_a_fresh_run(tmp_path):
    """A job folder whose metrics.jsonl is empty (a run stopped before its first epoch, or emptied
    by an overwrite that was then refused) holds no run: neither a sweep nor a fresh run into it is
    refused. A checkpoint or a metrics row is a run, and both are refused."""
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.jsonl").write_text("")
    assert not RunFolder(tmp_path / "0").holds_run()
    sweep.check_not_held(tmp_path, ["trainer.seed=1"])
    (tmp_path / "1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "1" / "checkpoints" / "best.pt").write_bytes(b"")
    assert RunFolder(tmp_path / "1").holds_run()
    with pytest.raises(DWNError, match=r"already holds runs \(job folders 1\); continue them with trainer.resume=auto"):
        sweep.check_not_held(tmp_path, ["trainer.seed=1"])
    sweep.check_not_held(tmp_path, ["trainer.seed=1", "trainer.resume=overwrite"])  # says what to do with them
