"""The end of a sweep (`dwn-train -m ...`): the summary of its configurations (dwn_train/report.py:
summary.csv, summary.md, curves.png in the sweep folder, and a table), then one line naming the
jobs that failed, and a non-zero exit status when any did. Registered as a Hydra callback in conf/hydra/default.yaml, so it runs
in the launching process with every launcher (basic, joblib, submitit).

A job that fails with a user or run error leaves `failed.json` (exit_code, error) in its folder
(dwn_train/cli.py); the other jobs run on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra.experimental.callback import Callback


def failed_jobs(sweep_dir: Path) -> list[tuple[str, dict]]:
    """(job folder name, its failed.json) for every failed job under `sweep_dir`, in job order."""
    found = []
    for path in Path(sweep_dir).glob("*/failed.json"):
        try:
            found.append((path.parent.name, json.loads(path.read_text())))
        except (OSError, ValueError):
            found.append((path.parent.name, {"exit_code": 1, "error": "unreadable failed.json"}))
    return sorted(found, key=lambda item: (not item[0].isdigit(), int(item[0]) if item[0].isdigit() else item[0]))


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        from . import cli

        cli._started = True  # from here on an exit status is ours, not a composition error's

    def on_multirun_end(self, config, **kwargs) -> None:
        from .report import collect, report

        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and collect([sweep_dir]):  # training jobs: summary files, a table, failures listed
            report([sweep_dir], sweep_dir, f"sweep summary ({sweep_dir})")
        failed = failed_jobs(sweep_dir)
        if not failed:
            return
        jobs = sum(1 for path in sweep_dir.iterdir() if (path / ".hydra").is_dir())
        details = "; ".join(f"job {name}: {info['error']}" for name, info in failed)
        print(f"dwn-train: {len(failed)} of {jobs} sweep jobs failed ({sweep_dir}): {details}", file=sys.stderr)
        sys.exit(max(int(info.get("exit_code", 1)) for _, info in failed))
