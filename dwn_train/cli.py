"""Console scripts: dwn-train, dwn-eval, dwn-export (Hydra apps over conf/train.yaml, eval.yaml, export.yaml).

A user error (DWNError) prints one sentence on stderr and exits with status 2; so does a config
that Hydra cannot compose (unknown option, misspelt key, wrong type).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from .config import register_configs
from .errors import DWNError
from .resources import conf_dir

register_configs()
_CONF = str(conf_dir())
_started = False


def _run(name: str, work, cfg):
    global _started
    _started = True
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise DWNError(f"no value for {', '.join(missing)}; pass it on the command line, e.g. {missing[0]}=...")
        return work(cfg, run_dir)
    except DWNError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="train")
def _train_app(cfg):
    from . import console
    from .train import train

    if _rank() == 0:
        console.print_config(cfg)
    return _run("dwn-train", train, cfg)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="eval")
def _eval_app(cfg):
    from .evaluate import run_eval

    return _run("dwn-eval", run_eval, cfg)


@hydra.main(version_base="1.3", config_path=_CONF, config_name="export")
def _export_app(cfg):
    from .export.run import run_export

    return _run("dwn-export", run_export, cfg)


def _rank() -> int:
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


def _entry(app) -> None:
    _distributed_argv()
    try:
        app()
    except SystemExit as exc:
        # Hydra exits 1 when the config cannot be composed: that is the user's input, so 2
        if exc.code == 1 and not _started:
            sys.exit(2)
        raise


def train_main() -> None:
    _entry(_train_app)


def eval_main() -> None:
    _entry(_eval_app)


def export_main() -> None:
    _entry(_export_app)


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m dwn_train.cli trainer.strategy=ddp ...
    train_main()
