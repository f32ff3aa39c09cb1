"""Fresh or resumed: the rules a run starts by (trainer.resume) and the checkpoint it continues.

    trainer.resume=null       a fresh run; refused where the folder holds a run (RunFolder.holds_run)
    trainer.resume=overwrite  a fresh run on purpose: the trainer clears the old run's records first
    trainer.resume=auto       continue checkpoints/last.pt; without one, a fresh run, refused where
                              other checkpoints are (a run killed before its first one starts again);
                              a run whose last.pt has trained all trainer.epochs is finished: kept
                              as it is, nothing trained or written (a sweep resumed as a whole)
    trainer.resume=PATH       continue that checkpoint (into this run's folder)

A resume continues the run it was: its checkpoint must hold optimizer and rng state, every setting
that shapes the run must be as trained (config.RESUME_MAY_CHANGE lists what may differ), and
epochs must be left to train. `start(cfg, folder)` checks all of this before any data loads and
returns the Resume that loads the checkpoint into what the trainer builds.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ..checkpoint import load_checkpoint, load_state, restore_encoder, set_rng_state
from ..config import ABSENT, RESUME_MAY_CHANGE, changed_settings, stored_config
from ..errors import DWNError
from ..optim import load_optimizer_state
from ..validate import monitor_key
from .command import override, override_value
from .folder import ANOTHER_FOLDER, RunFolder


def start(cfg, folder: RunFolder) -> "Resume | None":
    """The checkpoint this run continues, read and checked, or None for a fresh run (which does
    not replace a run the folder holds unless trainer.resume=overwrite says so)."""
    resume = cfg.trainer.resume
    if resume in (None, "", "none", "overwrite"):
        check_fresh(folder, resume)
        return None
    if resume == "auto" and not folder.last.is_file():
        check_fresh(folder, resume)
        return None
    return Resume(cfg, folder.last if resume == "auto" else Path(resume), finished_ok=resume == "auto")


def check_fresh(folder: RunFolder, resume) -> None:
    """Refuse a fresh run in a folder that holds a run (RunFolder.holds_run: its records; with
    trainer.resume=auto only its checkpoints count: a run killed before its first one starts again)."""
    if resume == "overwrite":
        return
    found = folder.records(checkpoints_only=resume == "auto")
    if not found:
        return
    held = f"{folder.path} already holds a run ({', '.join(found)})"
    if resume == "auto":
        raise DWNError(f"trainer.resume=auto found no checkpoints/last.pt, and {held}: continue from one of its "
                       f"checkpoints with trainer.resume=PATH, start afresh there with trainer.resume=overwrite, or "
                       f"choose another folder ({ANOTHER_FOLDER}).")
    if "checkpoints/last.pt" in found:
        go_on = "continue it with trainer.resume=auto, "
    elif any(name.startswith("checkpoints/") for name in found):
        go_on = "continue from one of its checkpoints with trainer.resume=PATH, "
    else:  # metrics only: nothing to continue from
        go_on = ""
    raise DWNError(f"the run folder {held}: {go_on}start afresh there with trainer.resume=overwrite (its "
                   f"checkpoints, metrics and curves are removed first), or choose another folder ({ANOTHER_FOLDER}).")


class Resume:
    """A checkpoint this run continues: read, and checked against today's config."""

    def __init__(self, cfg, path: Path, finished_ok: bool = False):
        self.path, self.where = Path(path), f"checkpoint {str(path)!r}"
        self.payload = state = load_checkpoint(path)
        lacking = [key for key in ("optimizer", "rng") if not isinstance(state.get(key), dict)]
        if lacking:  # what only a resume needs (dwn-eval and dwn-export read such a checkpoint)
            raise DWNError(f"{self.where} cannot be resumed: it has no {' or '.join(lacking)} state; evaluate or "
                           "export it, or start a fresh run.")
        check_resumable(cfg, state, path)
        # a finished run met by trainer.resume=auto is kept; asked to continue one, nothing is left
        self.finished = finished_ok and state["epoch"] == cfg.trainer.epochs
        if state["epoch"] >= cfg.trainer.epochs and not self.finished:
            raise DWNError(f"{self.where} has already trained {state['epoch']} epochs and trainer.epochs="
                           f"{cfg.trainer.epochs}: nothing is left to train; raise trainer.epochs to continue.")
        self.epoch, self.step, self.best = state["epoch"], state["step"], state["best_metric"]

    def done(self, folder: RunFolder) -> str:
        """What a finished run met by trainer.resume=auto says (it is kept as it is)."""
        best = f", best {self.payload.get('monitor')} {self.best:.4f}" if isinstance(self.best, float) else ""
        return (f"the run in {folder.path} has already trained its {self.epoch} epoch{'s' * (self.epoch != 1)} "
                f"({self.path.name}{best}): kept as it is; raise trainer.epochs to train it further.")

    def encoder(self, encoding_cfg):
        """The fitted thermometer the run was trained with."""
        return restore_encoder(encoding_cfg, self.payload, "the resumed checkpoint's encoder")

    @property
    def expect(self) -> tuple:
        """What prepare_data checks the loaded data against: (the checkpoint's data entry, its name)."""
        return self.payload["data"], self.where

    def load_into(self, model, optimizer, scheduler) -> None:
        """The trained weights, optimizer and schedule state, and the random streams as they were."""
        load_state(model, self.payload["model"], self.where)
        load_optimizer_state(optimizer, self.payload["optimizer"])
        if scheduler is not None and self.payload.get("scheduler") is not None:
            scheduler.load_state_dict(self.payload["scheduler"])
        set_rng_state(self.payload["rng"])


def check_resumable(cfg, state: dict, resume: Path) -> None:
    """A resumed run continues the run it was: every setting that shapes the run (data, split,
    augmentation, encoding, model, optimizer, schedule, seed, batch size, monitor) must be as
    trained; only config.RESUME_MAY_CHANGE may differ (trainer.epochs not under a cosine
    schedule, whose restored state keeps the length it was built for)."""
    trained = OmegaConf.to_container(stored_config(state["config"]), resolve=True)
    cosine = "cosine" in (trained["scheduler"]["kind"], cfg.scheduler.kind)
    free = tuple(k for k in RESUME_MAY_CHANGE if not (cosine and k == "trainer.epochs"))
    # the monitor is compared as the metric it names (auto is val_acc or train_acc, as val_fraction says: when
    # both are auto, a difference is val_fraction's, which is named itself)
    changed = changed_settings(trained, OmegaConf.to_container(cfg, resolve=True), (*free, "trainer.checkpoint.monitor"))
    both_auto = trained["trainer"]["checkpoint"]["monitor"] == cfg.trainer.checkpoint.monitor == "auto"
    if state.get("monitor") not in (None, monitor_key(cfg.trainer)) and not both_auto:
        changed.append(("trainer.checkpoint.monitor", state["monitor"], monitor_key(cfg.trainer)))
    if not changed:
        return
    text = lambda value: "(not set)" if value is ABSENT else override_value(value)
    shown = ", ".join(f"{key}={text(old)} (today {text(new)})" for key, old, new in changed[:8])
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    fix = " ".join(override(key, old) for key, old, _ in changed)
    raise DWNError(f"checkpoint {str(resume)!r} was trained with {shown}{more}; a resumed run continues with the "
                   f"settings it was trained with: add `{fix}` to the command (or train with new settings in a "
                   "new run folder).")
