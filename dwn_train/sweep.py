"""The end of a sweep (`dwn-train -m ...`): the summary of its configurations (dwn_train/report.py:
summary.csv, summary.md, curves.png in the sweep folder, and a table), then one line naming the
jobs that failed, and a non-zero exit status when any did. Registered as a Hydra callback in conf/hydra/default.yaml, so it runs
in the launching process with every launcher (basic, joblib, submitit).

A job that fails with a user or run error leaves `failed.json` (exit_code, error) in its folder
(dwn_train/cli.py); the other jobs run on.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        from . import cli

        cli._started = True  # from here on an exit status is ours, not a composition error's

    def on_multirun_end(self, config, **kwargs) -> None:
        from .report import collect, report

        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = collect([sweep_dir]) if sweep_dir.is_dir() else []
        if not jobs:
            return
        _, failed = report(jobs, sweep_dir, f"sweep summary ({sweep_dir})")  # summary files, a table
        if not failed:
            return
        count = sum(1 for path in sweep_dir.iterdir() if (path / ".hydra").is_dir())
        details = "; ".join(f"job {job.folder.name}: {job.failed}" for job in failed)
        app = config.hydra.help.app_name  # dwn-train, dwn-eval or dwn-export
        print(f"{app}: {len(failed)} of {count} sweep jobs failed ({sweep_dir}): {details}", file=sys.stderr)
        sys.exit(max(job.exit_code for job in failed))
