"""Console scripts: dwn-train, dwn-eval, dwn-export (Hydra apps over conf/train.yaml, eval.yaml, export.yaml).

Exit status: 0 done; 2 a user error (a DWNError: one sentence naming the value, file or key, or a
config Hydra cannot compose); 1 the environment stopped the run (a RunError or an OSError: disk
full, unwritable folder, a verification mismatch); 130/143/138 Ctrl-C, SIGTERM, SIGUSR1. Never a traceback for these. In a
sweep (-m) a failed job leaves failed.json in its folder and returns NaN (to Optuna: the worst value), and the other jobs run
on; the sweep ends with one line naming the failed jobs and a non-zero status (dwn_train/sweep.py).

This module reads what the process was given (argv, torchrun's environment, Hydra's run config)
and hands it down (checks before Hydra: run/precheck.py; of each command's values: validate.py).
Only Hydra and OmegaConf load before the command line is parsed, so `--help` is quick.
"""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import ListConfig

from .config import EvalConfig, ExportConfig, TrainConfig, register_configs
from .errors import DWNError, Interrupted, RunError, os_reason
from .resources import conf_dir, version
from .run import precheck, sweep
from .run.folder import RunFolder
from .run.interrupt import by, exit_code, stop_anywhere, stop_anywhere_in_job
from .run.lock import begun, forget

register_configs()
_CONF = str(conf_dir())


def _run(name: str, schema, work, cfg):
    """Run one job's `work(cfg, run_dir)` and route what it raises to one sentence and an exit status
    (or, in a sweep, to failed.json and NaN)."""
    precheck.mark_started()
    if isinstance(sys.stderr, _Held):  # what was held before the job started is said now
        sys.stderr.release()
    hydra_cfg = HydraConfig.get()
    folder, job = RunFolder(hydra_cfg.runtime.output_dir), hydra_cfg.job.name
    forget(folder)
    folder.failed.unlink(missing_ok=True)  # a job run again in its folder starts clean
    cwd = Path(hydra_cfg.runtime.cwd)
    in_sweep = sweep.Job.starts(Path(hydra_cfg.sweep.dir), folder, cwd) if hydra_cfg.mode == RunMode.MULTIRUN else None
    fail = lambda exc: _fail(name, exc, folder, job, in_sweep)
    try:
        from .validate import check_composed

        check_composed(cfg, schema, name)
        if in_sweep is not None and (said := in_sweep.resume(cfg)):
            print(f"{name}: {said}", file=sys.stderr)
            folder.append_log(job, f"{name}: {said}\n")
        with stop_anywhere_in_job():  # (in a launcher's worker: the console script's handlers are not there)
            return work(cfg, folder.path)
    except KeyboardInterrupt as exc:  # Ctrl-C; SIGTERM or SIGUSR1 (run/interrupt.py) outside the training loop
        whole = sweep.sweep_clause(in_sweep.sweep_dir) if in_sweep is not None else ""
        fail(Interrupted(f"interrupted{by(exc)} before the training loop (nothing of this run was saved) or after "
                         f"it{whole}.", exit_code(exc)))
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        fail(RunError(f"{where}{os_reason(exc)}."))
    except (DWNError, RunError, Interrupted) as exc:
        fail(exc)
    except Exception as exc:  # a fault of ours: a single run shows the traceback; a sweep goes on
        if type(exc).__module__.startswith("submitit"):  # submitit ended the job (a time limit, not requeued)
            kept = "; a checkpoint it wrote is kept for trainer.resume=auto" if name == "dwn-train" else ""
            fail(RunError(f"submitit stopped the job: {os_reason(exc).rstrip('.')}{kept}."))
        elif in_sweep is None:
            raise
        else:
            folder.append_log(job, traceback.format_exc())
            fail(RunError(f"internal error ({type(exc).__name__}: {os_reason(exc)}); its traceback is in "
                          f"{folder.log(job)}, please report it"))
    finally:
        if in_sweep is not None:
            in_sweep.ends()
    return _failed_value(hydra_cfg.sweeper.get("direction"))  # a failed job of a sweep


def _failed_value(direction) -> float:
    """What a failed job of a sweep returns: NaN; to a sweeper with a direction (Optuna's: one,
    dwn_train/sweep.py checks), the worst value (-inf where it maximises, inf where it minimises),
    a complete but worst trial: it cannot record a NaN (its failure path raises)."""
    if direction is None:
        return float("nan")
    way = direction[0] if isinstance(direction, ListConfig) else direction
    return float("-inf") if "max" in str(way).lower() else float("inf")


def _fail(name: str, exc: Exception, folder: RunFolder, job: str, in_sweep: "sweep.Job | None") -> None:
    """Report `exc` as one sentence on stderr and in the job's log; exit, or, in a sweep, record
    the failure (sweep.Job.failed) and let the sweep go on."""
    label = "" if isinstance(exc, Interrupted) else "error: "
    message = f"{name}: {label}{exc}"
    print(message, file=sys.stderr)
    folder.append_log(job, message + "\n")  # the job's log (Hydra's file handler) says why the run ended
    if in_sweep is None and exc.exit_code == 2 and not begun(folder):
        _remove_made(folder.path)  # refused before it started: leave no folder
    if in_sweep is not None and in_sweep.failed(exc.exit_code, str(exc), stopped=isinstance(exc, Interrupted)):
        return
    sys.exit(exc.exit_code)


def _remove_made(path: Path) -> None:
    """Where this command made the run folder `path` (precheck.made): remove it, then each folder
    above it that the command made too, while it is empty: another run may have put its folder
    beside this one meanwhile."""
    top = precheck.made(path)
    if top is None:
        return
    shutil.rmtree(path, ignore_errors=True)
    path = path.resolve()
    while path != top and top in path.parents:
        path = path.parent
        try:
            path.rmdir()
        except OSError:
            return


class RunStart(Callback):
    """Notes, before Hydra makes a single run's folder, whether it is new (conf/hydra/default.yaml)."""

    def on_run_start(self, config, **kwargs) -> None:
        precheck.note_made(Path(config.hydra.run.dir))


@hydra.main(version_base="1.3", config_path=_CONF, config_name="train")
def _train_app(cfg):
    def work(cfg, run_dir):
        from .run.command import Command
        from .train import train

        hydra_cfg, (world, rank, local) = HydraConfig.get(), _torchrun()
        overrides, whole = list(hydra_cfg.overrides.task), None
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the command that resumes the whole sweep, as it was started
            whole = sweep.resumable(Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir)
        if rank == 0:
            print(f"dwn-train: overrides: {' '.join(overrides) or 'none'}  (whole config: "
                  f"{RunFolder(run_dir).hydra / 'config.yaml'})")
        return train(cfg, run_dir, Command.launched(sys.argv[1:], overrides, world, local, whole))

    return _run("dwn-train", TrainConfig, work, cfg)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="eval")
def _eval_app(cfg):
    from .evaluate import run_eval

    return _run("dwn-eval", EvalConfig, run_eval, cfg)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="export")
def _export_app(cfg):
    from .deploy import run_export

    return _run("dwn-export", ExportConfig, run_export, cfg)


def _torchrun() -> tuple[int, int, int]:
    """(WORLD_SIZE, RANK, LOCAL_WORLD_SIZE) as torchrun sets them; (1, 0, 0) without torchrun."""
    env = os.environ
    return int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0")), int(env.get("LOCAL_WORLD_SIZE") or 0)


def _entry(name: str, app) -> None:
    if "--version" in sys.argv[1:]:
        return print(f"{name} {version()}")
    world, rank, _ = _torchrun()
    precheck.forget_made()
    stop_anywhere()  # SIGTERM and SIGUSR1 stop a run as Ctrl-C does
    held = sys.stderr = _Held(sys.stderr)  # what Hydra says before a job starts, to be said as one sentence
    try:
        precheck.check(name, sys.argv[1:], world)
        sys.argv += precheck.rank_words(rank, world)
        with precheck.early_lock(sys.argv[1:], world) if name == "dwn-train" else nullcontext():
            app()
    except (DWNError, RunError) as exc:  # the checks before Hydra, and the early lock
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        # Hydra exits 1 when the config cannot be composed: that is the user's input, so 2
        if exc.code == 1 and not precheck.started():
            text = held.take()
            sentence = precheck.composition_sentence(text)
            print(f"{name}: error: {sentence}" if sentence else text, file=held.real, end="\n" if sentence else "")
            given = precheck.named_dir(sys.argv[1:], "hydra.run.dir")  # made (and held) before Hydra composed
            if given:
                _remove_made(Path(given))
            sys.exit(2)
        raise
    except KeyboardInterrupt as exc:  # before a job started (composing the config), after it ended, or in
        # a launcher waiting for its workers (joblib ends them before they can say where they stopped)
        print(f"{name}: interrupted{by(exc)}{sweep.held_sweep_clause()}.", file=sys.stderr)
        sys.exit(exit_code(exc))
    except ValueError as exc:  # Hydra's own flags in a combination it refuses (e.g. -m with --cfg)
        if precheck.started() or os.environ.get("HYDRA_FULL_ERROR") == "1":  # a bug, or a traceback asked for
            raise
        print(f"{name}: error: {exc}.", file=sys.stderr)
        sys.exit(2)
    finally:
        sweep.end_all()  # a sweep stopped before its end gives its folder up
        held.release()
        sys.stderr = held.real


class _Held:
    """sys.stderr until a job starts: what is written before is held (Hydra's report of a config
    it cannot compose, said again as one sentence), then passed on; after, everything passes."""

    def __init__(self, real):
        self.real, self.text = real, []

    def write(self, text: str) -> int:
        if precheck.started():
            self.release()
            return self.real.write(text)
        self.text.append(text)
        return len(text)

    def take(self) -> str:
        text, self.text = "".join(self.text), []
        return text

    def release(self) -> None:
        if self.text:
            self.real.write(self.take())

    def __getattr__(self, name):  # flush, fileno, isatty, encoding: the real stream's
        return getattr(self.real, name)


def train_main() -> None:
    _entry("dwn-train", _train_app)


def eval_main() -> None:
    _entry("dwn-eval", _eval_app)


def export_main() -> None:
    _entry("dwn-export", _export_app)


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m dwn_train.cli trainer.strategy=ddp ...
    train_main()
