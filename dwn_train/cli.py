"""Console scripts: dwn-train, dwn-eval, dwn-export (Hydra apps over conf/train.yaml, eval.yaml, export.yaml).

Exit status: 0 done; 2 a user error (a DWNError: one sentence naming the value, file or key, or
a config Hydra cannot compose); 1 the environment stopped the run (a RunError or an OSError: disk
full, unwritable folder, a verification mismatch); 130 Ctrl-C. Never a traceback for these.
In a sweep (-m), a job that fails with a user or run error is recorded as failed (`failed.json`
in its folder says why), returns NaN to the sweeper, and the other jobs run; the sweep then ends
with one line naming the failed jobs and a non-zero status (dwn_train/sweep.py).

Only Hydra and OmegaConf are imported before the command line is parsed: torch and the rest load
when a job runs, so `--help` and composition errors are quick.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config import EvalConfig, ExportConfig, TrainConfig, register_configs, unknown_keys
from .errors import DWNError, Interrupted, RunError, os_reason
from .resources import conf_dir

register_configs()
_CONF = str(conf_dir())
_started = False  # set once a job (or a sweep) starts: a later exit status 1 is not Hydra's


def _run(name: str, schema, work, cfg):
    global _started
    _started = True
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    (run_dir / "failed.json").unlink(missing_ok=True)  # a job run again in its folder starts clean
    if sweep:
        from .sweep import join

        sweep_dir = Path(hydra_cfg.sweep.dir)  # as the launching process named it, from its working directory
        join(sweep_dir if sweep_dir.is_absolute() else Path(hydra_cfg.runtime.cwd) / sweep_dir, run_dir)
    try:
        _check_interpolations(cfg)
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise DWNError(f"no value for {', '.join(missing)}; pass it on the command line, e.g. {missing[0]}=...")
        unknown = unknown_keys(cfg, schema)
        if unknown:
            raise DWNError(f"unknown key {', '.join(unknown)}: {name} has no such setting (misspelt? "
                           f"`{name} --help` lists every key).")
        return work(cfg, run_dir)
    except KeyboardInterrupt:
        _fail(name, Interrupted("interrupted before the training loop (nothing of this run was saved) or after it."),
              run_dir, sweep)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _fail(name, RunError(f"{where}{os_reason(exc)}."), run_dir, sweep)
    except (DWNError, RunError, Interrupted) as exc:
        _fail(name, exc, run_dir, sweep)
    except Exception as exc:  # a fault of ours: a single run shows the traceback; a sweep goes on
        if not sweep:
            raise
        log = run_dir / f"{hydra_cfg.job.name}.log"
        try:
            with log.open("a") as handle:
                traceback.print_exc(file=handle)
        except OSError:
            pass
        _fail(name, RunError(f"internal error ({type(exc).__name__}: {os_reason(exc)}); its traceback is in {log}, "
                             "please report it"), run_dir, sweep)
    return float("nan")  # a failed job of a sweep


def _check_interpolations(cfg) -> None:
    """Every ${...} of the config resolves to a value of its key's type, or a DWNError names the key."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "a setting"
        raise DWNError(f"{key} cannot be resolved: {os_reason(exc).rstrip('.')}; give it a value, or an interpolation of an "
                       "existing setting of the right type.") from None


def _fail(name: str, exc: Exception, run_dir: Path, sweep: bool) -> None:
    """Report `exc` as one sentence on stderr and in the job's log; exit, or, in a sweep, record
    the failure in the job's folder and let the sweep go on."""
    label = "" if isinstance(exc, Interrupted) else "error: "
    message = f"{name}: {label}{exc}"
    print(message, file=sys.stderr)
    try:  # the job's log (Hydra's file handler) says why the run ended
        with (run_dir / f"{HydraConfig.get().job.name}.log").open("a") as log:
            log.write(message + "\n")
        if sweep and not isinstance(exc, Interrupted):
            (run_dir / "failed.json").write_text(json.dumps({"exit_code": exc.exit_code, "error": str(exc)}) + "\n")
            return
    except OSError:
        pass  # an unwritable folder was the error itself
    sys.exit(exc.exit_code)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="train")
def _train_app(cfg):
    def work(cfg, run_dir):
        from .train import train

        if _rank() == 0:
            overrides = " ".join(HydraConfig.get().overrides.task) or "none"
            print(f"dwn-train: overrides: {overrides}  (whole config: {run_dir / '.hydra' / 'config.yaml'})")
        return train(cfg, run_dir)

    return _run("dwn-train", TrainConfig, work, cfg)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="eval")
def _eval_app(cfg):
    from .evaluate import run_eval

    return _run("dwn-eval", EvalConfig, run_eval, cfg)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="export")
def _export_app(cfg):
    from .export.run import run_export

    return _run("dwn-export", ExportConfig, run_export, cfg)


def _rank() -> int:
    """distributed.launching_rank() without importing torch before the command line is parsed."""
    return int(os.environ.get("RANK", "0"))


def _distributed_argv() -> None:
    """Under torchrun every rank runs this program: all must share one run folder, and only
    rank 0 may write Hydra's files and logs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if not any(arg.startswith("hydra.run.dir=") for arg in sys.argv[1:]):
        print("dwn-train: error: under torchrun pass hydra.run.dir=DIR so that all ranks share one run folder.",
              file=sys.stderr)
        sys.exit(2)
    if _rank() > 0:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def _named_dir(argv: list[str], key: str) -> str | None:
    """The folder the last `key=VALUE` of `argv` names, as Hydra reads it (quotes removed; a number
    or bool as Hydra's string field stores it; "" when empty), or None when there is none or it holds an
    interpolation (${now:...}: only Hydra can resolve it)."""
    given = [arg for arg in argv if arg.startswith(key + "=")]
    if not given:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(given[-1]).value()
    except Exception:  # Hydra says what is wrong with the override when it parses it itself
        return None
    if value is None:  # key= (Hydra reads an empty value as null)
        return ""
    if isinstance(value, (int, float)):  # as Hydra's string field stores it: 123 -> "123", 1e3 -> "1000.0"
        return str(value)
    return value if isinstance(value, str) and "${" not in value else None


def _run_dir_problem(argv: list[str]) -> str | None:
    """Why the run folder cannot be made, checked before Hydra tries (whose failure is a
    traceback): the nearest existing folder on its path must be a writable directory."""
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    given = _named_dir(argv, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    path = Path(given or "outputs").absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"the run folder {path} cannot be made: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the run folder {path} cannot be made: {existing} is not writable"
    return None


@contextmanager
def _early_lock(argv: list[str]):
    """dwn-train with hydra.run.dir=DIR (the one way two runs can meet in one folder): hold DIR
    before Hydra writes its files there, so a refused second run changes nothing of the first,
    and put back the first run's .hydra files when Hydra's rewrite of them belonged to a command
    that was then refused (exit 2: a resume with other settings, a bad value) before it began
    rewriting the folder's records (rundir.begin), so the folder still says how its run was trained.
    Under torchrun the trainer takes it (only it knows the strategy)."""
    given = _named_dir(argv, "hydra.run.dir")
    if not given or any(arg in ("-m", "--multirun") for arg in argv) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield
        return
    from .rundir import begun, own

    with own(Path(given)) as run_dir:
        hydra_dir = run_dir / ".hydra"
        kept = {path: path.read_bytes() for path in hydra_dir.glob("*.yaml")} if hydra_dir.is_dir() else {}
        try:
            yield
        except SystemExit as exc:
            if exc.code == 2 and kept and not begun(run_dir):
                for path, content in kept.items():
                    path.write_bytes(content)
            raise


def _entry(name: str, app) -> None:
    if "--version" in sys.argv[1:]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"{name} {version('dwn-train')}")
        except PackageNotFoundError:
            print(f"{name} (not installed; running from a checkout)")
        return
    _distributed_argv()
    if name != "dwn-train" and any(arg.lstrip("+~").startswith("dataset=") for arg in sys.argv[1:]):
        print(f"{name}: error: dataset= cannot choose a data set here: a checkpoint is scored on the data set it "
              "was trained on (dataset.root, dataset.path, dataset.test_path or dataset.data_home point at it "
              "where it moved).", file=sys.stderr)
        sys.exit(2)
    empty = [key for key in ("hydra.run.dir", "hydra.sweep.dir") if _named_dir(sys.argv[1:], key) == ""]
    if empty:
        print(f"{name}: error: {empty[0]} is empty; name a folder, e.g. {empty[0]}=outputs/my_run.", file=sys.stderr)
        sys.exit(2)
    problem = None if any(a in ("--help", "-h", "--hydra-help", "--cfg", "-c") for a in sys.argv[1:]) \
        else _run_dir_problem(sys.argv[1:])
    if problem:
        print(f"{name}: error: {problem}; choose another with hydra.run.dir=DIR (hydra.sweep.dir=DIR for -m).",
              file=sys.stderr)
        sys.exit(1)
    try:
        with _early_lock(sys.argv[1:]) if name == "dwn-train" else nullcontext():
            app()
    except (DWNError, RunError) as exc:  # the early lock: another run holds the folder
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        # Hydra exits 1 when the config cannot be composed: that is the user's input, so 2
        if exc.code == 1 and not _started:
            sys.exit(2)
        raise
    except ValueError as exc:  # Hydra's own flags in a combination it refuses (e.g. -m with --cfg)
        if _started or os.environ.get("HYDRA_FULL_ERROR") == "1":  # a bug, or a traceback asked for
            raise
        print(f"{name}: error: {exc}.", file=sys.stderr)
        sys.exit(2)


def train_main() -> None:
    _entry("dwn-train", _train_app)


def eval_main() -> None:
    _entry("dwn-eval", _eval_app)


def export_main() -> None:
    _entry("dwn-export", _export_app)


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m dwn_train.cli trainer.strategy=ddp ...
    train_main()
