"""The start and end of a sweep (`dwn-train -m ...`). Before the first job: the checks of
run/sweep.start (one live sweep per folder, no job folder another process owns, no run the sweep
cannot continue). At the end: the summary of its configurations (dwn_train/report.py:
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
from omegaconf import ListConfig, OmegaConf

from .errors import DWNError, RunError, first_line
from .run import precheck, sweep
from .run.command import config_flags, sets


def _arguments(config) -> list[str]:
    """What a sweeper sweeps over, as both Hydra sweepers gather it: hydra.sweeper.params, then the
    command line's overrides."""
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    return params + list(config.hydra.overrides.task)


def _check_search_space(config) -> None:
    """Optuna's sweeper builds its search space only once the sweep has begun, and reports one it
    cannot (an interval whose low bound is above its high bound, say) with a traceback: build it
    the same way first, with the sweeper's own function, and say what is wrong in one sentence."""
    if "optuna" not in str(config.hydra.sweeper.get("_target_", "")).lower():
        return
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    try:
        create_params_from_overrides(_arguments(config))
    except Exception as exc:  # whatever the sweeper or Optuna's distributions refuse
        raise DWNError(f"the Optuna sweeper cannot search this space: {first_line(exc).split(': ', 1)[-1].rstrip('.')}"
                       " (hydra.sweeper.params and the sweep overrides).") from None


def _check_direction(config) -> None:
    """A sweeper given several directions (Optuna's multi-objective search) expects a value per
    direction from every job; dwn-train returns one."""
    direction = config.hydra.sweeper.get("direction")
    if isinstance(direction, ListConfig) and len(direction) != 1:
        raise DWNError(f"hydra.sweeper.direction={list(map(str, direction))} asks each job for {len(direction)} values, "
                       "but dwn-train returns one (the best monitored metric): give one direction (maximize or "
                       "minimize).")


def _planned(config) -> list[list[str]] | None:
    """Each job's overrides by job folder number, as Hydra's basic sweeper will make them (also
    under the joblib and submitit launchers); [] where job folders are not named by number (a
    custom hydra.sweep.subdir) or Hydra will refuse the sweep; None for a sweeper that draws its
    jobs as it goes (Optuna's)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    if OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir") != "${hydra.job.num}":
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(_arguments(config))
        return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:  # a sweep Hydra itself will refuse, with its own message
        return []


def _words(config) -> list[str]:
    """What the command resuming the sweep repeats: the configuration flags, Hydra's overrides
    (launcher, sweeper, subdir, ...) and the task's, less trainer.resume and the sweep folder (the
    resume command sets both)."""
    mine = lambda o: sets(o, "hydra.sweep.dir") or sets(o, "hydra.mode") or sets(o, "trainer.resume")
    given = OmegaConf.to_container(config.hydra.overrides, resolve=False)  # as written: x${hydra.job.num}
    return [*config_flags(sys.argv[1:]), *(o for o in [*given["hydra"], *given["task"]] if not mine(o))]


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir, app = Path(config.hydra.sweep.dir), config.hydra.help.app_name
        try:
            _check_search_space(config)
            _check_direction(config)
            sweep.start(sweep_dir, list(config.hydra.overrides.task), _words(config), _planned(config),
                        trains=app == "dwn-train")
        except (DWNError, RunError) as exc:  # raised in a callback, Hydra would warn and go on
            print(f"{app}: error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        precheck.mark_started()  # from here on an exit status is ours, not a composition error's

    def on_multirun_end(self, config, **kwargs) -> None:
        from .report import collect, report

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep.end(sweep_dir)
        refused = sweep.refusals(sweep_dir)  # jobs refused in folders holding runs they did not touch
        folders = [p for p in sweep.members(sweep_dir) if p.name not in {name for name, _, _ in refused}]
        jobs = collect(folders)
        app = config.hydra.help.app_name  # dwn-train, dwn-eval or dwn-export
        if app == "dwn-train" and jobs:  # summary files and a table of the training runs
            _, failed = report(jobs, sweep_dir, f"sweep summary ({sweep_dir})")
        else:  # evaluations and exports have no training curves to pool
            failed = [job for job in jobs if job.failed is not None]
        failures = [(job.folder.name, job.exit_code, job.failed) for job in failed] + refused
        if not failures:
            return
        stopped = lambda code: code > 128  # noqa: E731  (a signal: 128 + its number)
        # a stopped job's sentence goes on with its resume commands: the line says where it stopped, and once how to go on
        details = "; ".join(f"job {name}: {(error.split('; ')[0] if stopped(code) else error).rstrip('.')}"
                            for name, code, error in failures)
        if any(stopped(code) for _, code, _ in failures):
            details += sweep.sweep_clause(sweep_dir)
        print(f"{app}: {len(failures)} of {len(folders) + len(refused)} sweep jobs failed ({sweep_dir}): {details}", file=sys.stderr)
        sys.exit(max(code for _, code, _ in failures))
