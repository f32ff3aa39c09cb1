"""The end of a sweep (`dwn-train -m ...`): the summary of its configurations (dwn_train/report.py:
summary.csv, summary.md, curves.png in the sweep folder, and a table), then one line naming the
jobs that failed, and a non-zero exit status when any did. Registered as a Hydra callback in conf/hydra/default.yaml, so it runs
in the launching process with every launcher (basic, joblib, submitit).

A job that fails (a user or run error, or a fault of ours) leaves `failed.json` (exit_code, error)
in its folder (dwn_train/cli.py); the other jobs run on. Only this sweep's jobs are summarised: the
STARTED marker written into the sweep folder when the sweep begins holds a random id, which every job
copies into its own folder (JOINED) as it starts; a job folder belongs to this sweep when the two
match. No clocks are compared, so a cluster file system's skew or coarse timestamps cannot misjudge.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback

# written into the sweep folder when a sweep starts, holding the sweep's id; each job writes the id
# into JOINED in its folder (a sweep folder reused by another sweep keeps that one's jobs too)
STARTED = ".sweep_started"
JOINED = ".sweep_id"


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        from . import cli

        sweep_dir = Path(config.hydra.sweep.dir)
        if config.hydra.help.app_name == "dwn-train":
            _refuse_a_held_folder(sweep_dir, list(config.hydra.overrides.task))
        cli._started = True  # from here on an exit status is ours, not a composition error's
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / STARTED).write_text(uuid.uuid4().hex + "\n")
        except OSError:
            pass  # the launcher will say why the folder cannot be made

    def on_multirun_end(self, config, **kwargs) -> None:
        from .report import collect, job_order, report

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = _read(sweep_dir / STARTED)
        folders = sorted((p for p in sweep_dir.iterdir() if _this_sweeps(p, sweep_id)), key=job_order) \
            if sweep_dir.is_dir() else []
        jobs = collect(folders)
        app = config.hydra.help.app_name  # dwn-train, dwn-eval or dwn-export
        if app == "dwn-train" and jobs:  # summary files and a table of the training runs
            _, failed = report(jobs, sweep_dir, f"sweep summary ({sweep_dir})")
        else:  # evaluations and exports have no training curves to pool
            failed = [job for job in jobs if job.failed is not None]
        if not failed:
            return
        details = "; ".join(f"job {job.folder.name}: {job.failed}" for job in failed)
        print(f"{app}: {len(failed)} of {len(folders)} sweep jobs failed ({sweep_dir}): {details}", file=sys.stderr)
        sys.exit(max(job.exit_code for job in failed))


def _refuse_a_held_folder(sweep_dir: Path, overrides: list) -> None:
    """A training sweep into a folder whose job folders hold runs would have each job refused one by
    one (train._check_fresh), after Hydra had rewritten its .hydra record: refuse the sweep at once,
    unless it says what to do with them (trainer.resume=auto or overwrite)."""
    if any(o.lstrip("+~").startswith("trainer.resume=") for o in overrides) or not sweep_dir.is_dir():
        return
    from .report import job_order

    held = [p.name for p in sorted(sweep_dir.iterdir(), key=job_order) if p.is_dir() and (
        any((p / "checkpoints").glob("*.pt")) or (p / "metrics.jsonl").is_file())]
    if held:
        from .rundir import ANOTHER_FOLDER

        print(f"dwn-train: error: the sweep folder {sweep_dir} already holds runs (job folders "
              f"{', '.join(held[:5])}{' ...' if len(held) > 5 else ''}); continue them with trainer.resume=auto, "
              f"start afresh with trainer.resume=overwrite, or choose another folder ({ANOTHER_FOLDER}).",
              file=sys.stderr)
        sys.exit(2)


def join(sweep_dir: Path, job_dir: Path) -> None:
    """Mark `job_dir` as a job of the sweep now running in `sweep_dir` (called as each job starts)."""
    sweep_id = _read(sweep_dir / STARTED)
    if sweep_id:
        try:
            (job_dir / JOINED).write_text(sweep_id + "\n")
        except OSError:
            pass  # an unwritable job folder fails the job itself, which says why


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _this_sweeps(folder: Path, sweep_id: str) -> bool:
    """A job folder (Hydra's files, metrics or a failure record) that joined this sweep; without a
    sweep id (the marker could not be written or read) every job folder is kept."""
    if not folder.is_dir() or not any((folder / name).exists() for name in (".hydra", "metrics.jsonl", "failed.json")):
        return False
    return not sweep_id or _read(folder / JOINED) == sweep_id
