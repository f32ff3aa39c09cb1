"""The end of a sweep (`dwn-train -m ...`): the summary of its configurations (dwn_train/report.py:
summary.csv, summary.md, curves.png in the sweep folder, and a table), then one line naming the
jobs that failed, and a non-zero exit status when any did. Registered as a Hydra callback in conf/hydra/default.yaml, so it runs
in the launching process with every launcher (basic, joblib, submitit).

A job that fails (a user or run error, or a fault of ours) leaves `failed.json` (exit_code, error)
in its folder (dwn_train/cli.py); the other jobs run on. Only this sweep's jobs are summarised: those
whose Hydra files are newer than the STARTED marker written when the sweep began.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

# written into the sweep folder when a sweep starts: the jobs of this sweep are the job folders
# whose Hydra files are newer (a sweep folder reused by another sweep keeps that one's jobs too)
STARTED = ".sweep_started"


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        from . import cli

        cli._started = True  # from here on an exit status is ours, not a composition error's
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / STARTED).write_text("")
        except OSError:
            pass  # the launcher will say why the folder cannot be made

    def on_multirun_end(self, config, **kwargs) -> None:
        from .report import collect, job_order, report

        sweep_dir = Path(config.hydra.sweep.dir)
        started = sweep_dir / STARTED
        since = started.stat().st_mtime if started.is_file() else 0.0  # same file system clock as the jobs'
        folders = sorted((p for p in sweep_dir.iterdir() if _this_sweeps(p, since)), key=job_order) \
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


def _this_sweeps(folder: Path, since: float) -> bool:
    """A job folder (Hydra's files, metrics or a failure record) written since the sweep began; one
    without Hydra's config (hydra.output_subdir=null) cannot say when, and is kept."""
    if not folder.is_dir() or not any((folder / name).exists() for name in (".hydra", "metrics.jsonl", "failed.json")):
        return False
    config = folder / ".hydra" / "config.yaml"
    try:
        return not config.is_file() or config.stat().st_mtime >= since
    except OSError:
        return True
