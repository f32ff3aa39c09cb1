"""Sweep membership and a training sweep into a folder that holds runs (dwn_train/run/sweep.py)."""

import csv
import json
import os
import time

import pytest

from dwn_train.errors import DWNError
from dwn_train.run import sweep
from dwn_train.run.folder import RunFolder
from helpers.runs import ONE_EPOCH, clean


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
    sweep.start(tmp_path, [], [], None)
    sweep.end(tmp_path)
    for name in ("10", "2", "extra"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        sweep.join(tmp_path, RunFolder(tmp_path / name))
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
    sweep.check_jobs(tmp_path, ["trainer.seed=1"], None)
    (tmp_path / "1" / "checkpoints").mkdir(parents=True)
    (tmp_path / "1" / "checkpoints" / "best.pt").write_bytes(b"")
    assert RunFolder(tmp_path / "1").holds_run()
    with pytest.raises(DWNError, match=r"already holds runs \(job folders 1\); continue them with trainer.resume=auto"):
        sweep.check_jobs(tmp_path, ["trainer.seed=1"], None)
    sweep.check_jobs(tmp_path, ["trainer.seed=1", "trainer.resume=overwrite"], None)  # says what to do with them


# sweep jobs long enough to be stopped in the middle: three epochs of small batches
SLOW_JOBS = [*ONE_EPOCH, "trainer.batch_size=16", "trainer.epochs=3"]


def _wait_for(path, proc, seconds=180):
    deadline = time.time() + seconds
    while time.time() < deadline and not path.is_file():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert path.is_file(), f"{path} was never written"


def _summary(sweep_dir):
    with (sweep_dir / "summary.csv").open() as handle:
        return [(row["n"], row["jobs"]) for row in csv.DictReader(handle)]


def _kept(folder):
    return {p: p.read_bytes() for p in (folder / "checkpoints" / "last.pt", folder / "metrics.jsonl")}


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_then_the_jobs_command_then_the_sweeps_keeps_every_finished_job(tmp_path):
    import shlex
    import signal
    import subprocess

    from helpers.runs import ENV

    proc = subprocess.Popen(["dwn-train", "-m", *SLOW_JOBS, "trainer.seed=0,1,2", f"hydra.sweep.dir={tmp_path}"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(tmp_path / "1" / "checkpoints" / "last.pt", proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in out + err, err
    assert not (tmp_path / ".lock").exists()  # a stopped sweep gives its folder up
    job_cmd = shlex.split(err.split("resume this job with `")[1].split("`")[0])
    sweep_cmd = shlex.split(err.split("resume the whole sweep (its finished jobs are kept) with `")[1].split("`")[0])
    assert sweep_cmd[:2] == ["dwn-train", "-m"] and "trainer.seed=0,1,2" in sweep_cmd
    assert sweep_cmd[-2:] == ["trainer.resume=auto", f"hydra.sweep.dir={tmp_path}"]
    assert f"hydra.run.dir={tmp_path / '1'}" in job_cmd
    finished = _kept(tmp_path / "0")
    subprocess.run(job_cmd, env=ENV, check=True, capture_output=True)  # job 1 finishes on its own
    second = _kept(tmp_path / "1")
    done = subprocess.run(sweep_cmd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "has already trained its 3 epochs" in done.stdout + done.stderr
    assert _kept(tmp_path / "0") == finished and _kept(tmp_path / "1") == second  # kept, not trained again
    assert "trainer.resume" not in (tmp_path / "0" / ".hydra" / "overrides.yaml").read_text()  # its record too
    assert not list(tmp_path.glob("*/failed.json"))
    assert _summary(tmp_path) == [("3", " ".join(str(tmp_path / j) for j in "012"))]


@pytest.mark.slow
def test_a_killed_sweep_resumes_as_a_whole_and_a_second_sweep_is_refused_while_it_runs(tmp_path):
    import signal
    import subprocess

    from helpers.runs import ENV

    command = ["dwn-train", "-m", *SLOW_JOBS, "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(tmp_path / "0" / "checkpoints" / "last.pt", proc)
    # another sweep into the same folder, while the first runs: refused before any job
    other = subprocess.run(["dwn-train", "-m", *ONE_EPOCH, "trainer.seed=5,6", "trainer.resume=overwrite",
                            f"hydra.sweep.dir={tmp_path}"], env=ENV, capture_output=True, text=True)
    assert other.returncode == 2 and f"the sweep folder {tmp_path} is in use by another running sweep" in other.stderr
    assert "Traceback" not in other.stderr
    _wait_for(tmp_path / "1" / "checkpoints" / "last.pt", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    finished = _kept(tmp_path / "0")
    done = subprocess.run([*command, "trainer.resume=auto"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _kept(tmp_path / "0") == finished
    assert [row["epoch"] for row in map(json.loads, (tmp_path / "1" / "metrics.jsonl").read_text().splitlines())] \
        == [1, 2, 3]
    assert not list(tmp_path.glob("*/failed.json")) and not (tmp_path / ".lock").exists()
    assert _summary(tmp_path) == [("2", f"{tmp_path / '0'} {tmp_path / '1'}")]


def test_a_sweep_resumed_with_other_overrides_is_refused_whole_and_one_extended_keeps_its_jobs(run_cli, tmp_path):
    assert run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}")[0] == 0
    kept = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    code, out, err = run_cli("train", "-m", *ONE_EPOCH, "model.layers.0.out_features=50", "trainer.seed=0,1",
                             "trainer.resume=auto", f"hydra.sweep.dir={tmp_path}")
    assert code == 2 and f"the sweep folder {tmp_path} holds other runs than this sweep's (job folders 0, 1" in err
    assert "Traceback" not in out + err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == kept
    # the same sweep with one more seed: jobs 0 and 1 are kept, job 2 trains
    code, out, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1,2", "trainer.resume=auto",
                             f"hydra.sweep.dir={tmp_path}")
    assert code == 0, err
    assert all((tmp_path / "0" / name).read_bytes() == kept[tmp_path / "0" / name]
               for name in ("metrics.jsonl", "checkpoints/last.pt"))
    assert _summary(tmp_path) == [("3", " ".join(str(tmp_path / j) for j in "012"))]


def test_a_job_refused_in_a_folder_holding_a_run_leaves_that_run_as_it_was(run_cli, tmp_path):
    """Its failure is recorded in the sweep folder, not as failed.json beside the run it met."""
    assert run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}")[0] == 0
    # the jobs' runs were trained with other settings than their records say (edited by hand, say)
    for job in "01":
        with (tmp_path / job / ".hydra" / "overrides.yaml").open("a") as handle:
            handle.write("- optimizer.lr=0.5\n")
    (tmp_path / "1" / "failed.json").write_text('{"exit_code": 143, "error": "interrupted by SIGTERM"}')
    jobs = lambda: {p: p.read_bytes() for p in tmp_path.glob("[01]/**/*") if p.is_file()}  # noqa: E731
    kept = jobs()
    code, out, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", "optimizer.lr=0.5",
                             "trainer.resume=auto", f"hydra.sweep.dir={tmp_path}")
    assert code == 2 and "2 of 2 sweep jobs failed" in err and "was trained with optimizer.lr=" in err, err
    assert "Traceback" not in out + err
    # Hydra wrote this sweep's record over each job's, the job its sweep id and log lines, before
    # it could refuse: all put back, so the job folders are byte for byte as they were
    assert jobs() == kept  # job 1's failed.json from an earlier stop included
    assert not (tmp_path / sweep.KEPT).exists() and not (tmp_path / ".lock").exists()


def test_a_sweep_meeting_a_job_folder_a_live_run_owns_is_refused_before_any_job(run_cli, tmp_path):
    """Following a job's resume command while its sweep is resumed too: the sweep waits its turn."""
    from dwn_train.run.lock import own

    assert run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", f"hydra.sweep.dir={tmp_path}")[0] == 0
    kept = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    with own(RunFolder(tmp_path / "1")):  # a dwn-train resuming job 1 on its own, still running
        code, out, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0,1", "trainer.resume=auto",
                                 f"hydra.sweep.dir={tmp_path}")
    assert code == 2 and f"the sweep folder's job folder {tmp_path / '1'} is in use by a running dwn-train (pid " \
        f"{os.getpid()})" in err and "Traceback" not in out + err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == kept


def _held_job(sweep_dir, name, overrides):
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.pt").write_bytes(b"")


def test_a_resumed_sweep_may_change_what_a_resume_may_and_is_matched_by_job_number_only_where_folders_are(tmp_path):
    _held_job(tmp_path, "0", ["trainer.seed=0", "trainer.epochs=3"])
    _held_job(tmp_path, "1", ["trainer.seed=1", "trainer.epochs=3"])
    auto = ["trainer.seed=0,1", "trainer.resume=auto"]
    # more epochs and threads: what a resume may change (config.RESUME_MAY_CHANGE)
    sweep.check_jobs(tmp_path, auto, [["trainer.seed=0", "trainer.epochs=5", "trainer.threads=2"],
                                      ["trainer.seed=1", "trainer.epochs=5", "trainer.threads=2"]])
    with pytest.raises(DWNError, match=r"holds other runs than this sweep's \(job folders 1: job 1 ran "
                                       r"`trainer.seed=1`, this sweep's job 1 is `trainer.seed=2`\)"):
        sweep.check_jobs(tmp_path, auto, [["trainer.seed=0"], ["trainer.seed=2"]])
    sweep.check_jobs(tmp_path, auto, [])  # folders not named by job number: each job checks its own run
    # a sweeper that draws its jobs as it goes (Optuna) cannot be matched to the runs at all
    with pytest.raises(DWNError, match=r"holds runs \(job folders 0, 1\) that this sweeper's jobs cannot be matched "
                                       r"to .* start the search in another folder"):
        sweep.check_jobs(tmp_path, auto, None)
    sweep.check_jobs(tmp_path, ["trainer.resume=overwrite"], None)
    with pytest.raises(DWNError, match="already holds runs"):  # null is no resume, not a checkpoint path
        sweep.check_jobs(tmp_path, ["trainer.resume=null"], [])


def test_a_sweep_stopped_outside_a_job_still_says_how_to_resume_it(tmp_path):
    """joblib ends its workers on Ctrl-C before they can say where they stopped: the launching
    process, which holds the sweep, gives the command that resumes it."""
    sweep.start(tmp_path, ["trainer.seed=0,1"], ["trainer.seed=0,1"], [["trainer.seed=0"], ["trainer.seed=1"]])
    try:
        assert sweep.held_sweep_clause() == ("; resume the whole sweep (its finished jobs are kept) with "
                                             f"`dwn-train -m trainer.seed=0,1 trainer.resume=auto "
                                             f"hydra.sweep.dir={tmp_path}`")
    finally:
        sweep.end_all()
    assert sweep.held_sweep_clause() == "" and not (tmp_path / ".lock").exists()


def test_the_sweeps_resume_command_repeats_hydras_overrides_as_they_were_written(run_cli, tmp_path):
    """The launcher, the sweeper and a job folder pattern are Hydra's overrides, not the task's:
    the command that resumes the sweep repeats them, less the sweep folder (it names its own)."""
    code, _, err = run_cli("train", "-m", *ONE_EPOCH, "trainer.seed=0", "hydra/launcher=basic",
                           "hydra.sweep.subdir=job${hydra.job.num}", f"hydra.sweep.dir={tmp_path}")
    assert code == 0, err
    words = sweep.marker(tmp_path)
    assert words[:2] == ["hydra/launcher=basic", "hydra.sweep.subdir=job${hydra.job.num}"]
    assert words[2:] == [*ONE_EPOCH, "trainer.seed=0"]
    assert (tmp_path / "job0" / ".sweep_id").is_file() and not (tmp_path / ".lock").exists()


def test_failed_jobs_of_an_optuna_sweep_are_its_worst_trials_not_a_traceback(run_cli, tmp_path):
    """Hydra's Optuna sweeper raises on a NaN trial value: a failed job returns the worst value of
    the direction, the search goes on, and the sweep ends with the line naming its failed jobs."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import subprocess

    import yaml

    from helpers.runs import ENV

    # its own process: Optuna's log handler keeps the stderr of the process that first imported it
    done = subprocess.run(["dwn-train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                           "hydra.sweeper.direction=maximize", *ONE_EPOCH, "optimizer.lr=interval(0.001,0.01)",
                           "trainer.batch_size=0", f"hydra.sweep.dir={tmp_path}"], env=ENV, capture_output=True, text=True)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 2 and "Traceback" not in out + err, err
    assert f"2 of 2 sweep jobs failed ({tmp_path}): job 0: trainer.batch_size must be a positive integer; got 0; " \
           "job 1:" in err
    assert yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["best_value"] == float("-inf")
    assert sweep.marker(tmp_path) is None  # its jobs are drawn: no command resumes it as a whole
    # several directions ask each job for several values: dwn-train returns one
    code, out, err = run_cli("train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                             "hydra.sweeper.direction=[maximize,minimize]", *ONE_EPOCH,
                             "optimizer.lr=interval(0.001,0.01)", f"hydra.sweep.dir={tmp_path}/two")
    clean(code, out, err, 2, "hydra.sweeper.direction=['maximize', 'minimize'] asks each job for 2 values, but "
                             "dwn-train returns one (the best monitored metric): give one direction")
    assert not (tmp_path / "two").exists()


def test_a_job_that_submitit_ends_is_a_failed_job_with_its_reason_not_an_internal_error(run_cli, tmp_path, monkeypatch):
    from dwn_train import train as training

    class UncompletedJobError(RuntimeError):  # what submitit raises in a job it will not requeue
        __module__ = "submitit.core.utils"

    def ended(*args, **kwargs):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(training, "train", ended)
    code, out, err = run_cli("train", "-m", *ONE_EPOCH, f"hydra.sweep.dir={tmp_path}")
    reason = ("submitit stopped the job: Job not requeued because: timed-out too many times; a checkpoint it wrote "
              "is kept for trainer.resume=auto.")
    assert code == 1 and reason in err and "internal error" not in err and "Traceback" not in out + err, err
    assert json.loads((tmp_path / "0" / "failed.json").read_text()) == {"exit_code": 1, "error": reason}


@pytest.mark.slow
def test_a_job_a_scheduler_stops_in_a_launchers_worker_ends_the_sweep_with_its_summary_and_resume_command(tmp_path):
    """submitit runs each job in a worker process: SIGUSR1 (SLURM's early warning) stops the job
    there like Ctrl-C, the launcher still gets its result, so the sweep ends with its summary and a
    line naming the stopped job and the command resuming the sweep (Hydra's launcher included)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import shlex
    import signal
    import subprocess

    from helpers.runs import ENV

    proc = subprocess.Popen(["dwn-train", "-m", "hydra/launcher=submitit_local", *SLOW_JOBS, "trainer.epochs=40",
                             f"hydra.sweep.dir={tmp_path}"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(tmp_path / "0" / "checkpoints" / "last.pt", proc)
    os.kill(int((tmp_path / "0" / ".lock").read_text()), signal.SIGUSR1)  # the job's worker holds its folder
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 138 and "Traceback" not in out + err, err
    assert json.loads((tmp_path / "0" / "failed.json").read_text())["exit_code"] == 138
    assert (tmp_path / "summary.csv").is_file() and not (tmp_path / ".lock").exists()
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"dwn-train: 1 of 1 sweep jobs failed ({tmp_path}): job 0: interrupted by SIGUSR1 at epoch")
    resume = shlex.split(line.split("resume the whole sweep (its finished jobs are kept) with `")[1].split("`")[0])
    assert resume[:3] == ["dwn-train", "-m", "hydra/launcher=submitit_local"] and "trainer.resume=auto" in resume
    done = subprocess.run([*resume, "trainer.epochs=3"], env=ENV, capture_output=True, text=True)  # (a shorter run)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "0" / "failed.json").exists() and _summary(tmp_path) == [("1", str(tmp_path / "0"))]


@pytest.mark.slow
def test_a_job_the_scheduler_requeues_continues_its_own_run(tmp_path):
    """submitit requeues a job on its SIGUSR2 (a preemption; a time-out while max_num_timeout
    allows): the job runs its overrides again in its folder, which holds its own run of this same
    sweep, so it continues that run rather than being refused as a fresh run over it."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import signal
    import subprocess

    from helpers.runs import ENV

    proc = subprocess.Popen(["dwn-train", "-m", "hydra/launcher=submitit_local", *SLOW_JOBS, "trainer.epochs=6",
                             f"hydra.sweep.dir={tmp_path}"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(tmp_path / "0" / "checkpoints" / "last.pt", proc)
    os.kill(int((tmp_path / "0" / ".lock").read_text()), signal.SIGUSR2)  # submitit's own signal: it requeues
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "Traceback" not in out + err, err
    assert "runs again in" in (tmp_path / "0" / "train.log").read_text()
    assert [row["epoch"] for row in map(json.loads, (tmp_path / "0" / "metrics.jsonl").read_text().splitlines())] \
        == [1, 2, 3, 4, 5, 6]
    assert _summary(tmp_path) == [("1", str(tmp_path / "0"))]
