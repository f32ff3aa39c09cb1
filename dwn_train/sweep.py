"""The end of a sweep (`dwn-train -m ...`): the summary of its configurations (dwn_train/report.py:
summary.csv, summary.md, curves.png in the sweep folder, and a table), then one line naming the
jobs that failed, and a non-zero exit status when any did. Registered as a Hydra callback in
conf/hydra/default.yaml, so it runs in the launching process with every launcher (basic, joblib,
submitit).

A job that fails (a user or run error, or a fault of ours) leaves `failed.json` (exit_code, error)
in its folder (dwn_train/cli.py); the other jobs run on. Only this sweep's jobs are summarised
(membership: dwn_train/run/sweep.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from .errors import DWNError
from .run import precheck, sweep


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if config.hydra.help.app_name == "dwn-train":
            try:
                sweep.check_not_held(sweep_dir, list(config.hydra.overrides.task))
            except DWNError as exc:
                print(f"dwn-train: error: {exc}", file=sys.stderr)
                sys.exit(exc.exit_code)
        precheck.mark_started()  # from here on an exit status is ours, not a composition error's
        sweep.begin(sweep_dir)

    def on_multirun_end(self, config, **kwargs) -> None:
        from .report import collect, report

        sweep_dir = Path(config.hydra.sweep.dir)
        folders = sweep.members(sweep_dir)
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
