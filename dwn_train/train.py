"""The training run, read top to bottom: check -> data -> encoder -> model -> epochs -> checkpoints.

The whole encoded data set lives on the training device as uint8 bits; each epoch draws a
permutation from a generator seeded by (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one without replaying any random stream.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from . import console, distributed, rundir
from .augment import augmented_bits, draw_shifts
from .checkpoint import load_checkpoint, load_state, make_payload, save_checkpoint, set_rng_state
from .config import stored_paths_absolute
from .errors import DWNError, Interrupted
from .graphs import GraphStep, captures
from .layers import LUTLayer
from .metrics import MetricsLog
from .model import build_model
from .optim import build_optimizer, build_scheduler, current_lr, load_optimizer_state
from .prepare import prepare_data, resolve_device
from .regularizers import penalty
from .scoring import evaluate
from .validate import monitor_key, validate_train_config


def train(cfg, run_dir: Path) -> float:
    """Train as `cfg` says, writing into `run_dir`; returns the best monitored metric."""
    t = cfg.trainer
    validate_train_config(cfg)  # every value, before any data is loaded
    device = resolve_device(t.device)
    _check_backend(t.backend, device)
    if t.threads:
        torch.set_num_threads(t.threads)
    # rank 0 owns the run folder (lock, writable, stale temporaries gone); other DDP ranks share it
    others = t.strategy == "ddp" and distributed.launching_rank() > 0
    owner = nullcontext(run_dir) if others else rundir.own(run_dir)
    with owner:
        ctx = distributed.setup(t.strategy, device)
        try:
            return _train(cfg, run_dir, ctx)
        finally:
            distributed.teardown(ctx)


def _check_backend(name: str, device) -> None:
    if name == "cuda":
        from . import kernels

        if device.type != "cuda" or not kernels.available():
            raise DWNError("trainer.backend=cuda needs trainer.device=cuda and CuPy "
                           "(pip install 'dwn-train[cuda]'); use backend=auto or torch.")


def _set_backend(model, t) -> None:
    """Choose the LUT implementation of every layer (see LUTLayer.backend)."""
    for module in model.modules():
        if isinstance(module, LUTLayer):
            module.backend, module.deterministic = t.backend, t.deterministic


def _resume_path(cfg, run_dir: Path):
    """The checkpoint this run continues, or None for a fresh run. A fresh run does not replace a
    run the folder already holds unless trainer.resume=overwrite says so (_check_fresh)."""
    resume = cfg.trainer.resume
    if resume in (None, "", "none", "overwrite"):
        _check_fresh(run_dir, resume)
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            return last
        _check_fresh(run_dir, resume)
        return None
    return Path(resume)


def _check_fresh(run_dir: Path, resume) -> None:
    """Refuse a fresh run in a folder holding another run's checkpoints or metrics (with
    trainer.resume=auto: its checkpoints; a run killed before its first checkpoint starts again)."""
    if resume == "overwrite":
        return
    found = sorted(f"checkpoints/{p.name}" for p in (run_dir / "checkpoints").glob("*.pt"))
    metrics = run_dir / "metrics.jsonl"
    if resume != "auto" and metrics.is_file() and metrics.stat().st_size:
        found.insert(0, "metrics.jsonl")
    if not found:
        return
    held = f"{run_dir} already holds a run ({', '.join(found)})"
    if resume == "auto":
        raise DWNError(f"trainer.resume=auto found no checkpoints/last.pt, and {held}: continue from one of its "
                       f"checkpoints with trainer.resume=PATH, start afresh there with trainer.resume=overwrite, or "
                       f"choose another folder ({rundir.ANOTHER_FOLDER}).")
    if "checkpoints/last.pt" in found:
        go_on = "continue it with trainer.resume=auto, "
    elif any(name.startswith("checkpoints/") for name in found):
        go_on = "continue from one of its checkpoints with trainer.resume=PATH, "
    else:  # metrics only: nothing to continue from
        go_on = ""
    raise DWNError(f"the run folder {held}: {go_on}start afresh there with trainer.resume=overwrite (its "
                   f"checkpoints, metrics and curves are removed first), or choose another folder ({rundir.ANOTHER_FOLDER}).")


def _clear_records(run_dir: Path) -> None:
    """What an earlier run left in the folder a fresh run starts in (trainer.resume=overwrite):
    its checkpoints, curves and TensorBoard events, so nothing of it can be resumed or read as
    this run's. (metrics.jsonl/csv are rewritten by MetricsLog.keep_through(0).)"""
    for path in (run_dir / "checkpoints").glob("*.pt"):
        path.unlink(missing_ok=True)
    (run_dir / "curves.png").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def _check_resumable(cfg, state: dict, resume: Path) -> None:
    """A resumed run continues the run it was: every setting that shapes the run (data, split,
    augmentation, encoding, model, optimizer, schedule, seed, batch size, monitor) must be as
    trained; only config.RESUME_MAY_CHANGE may differ (trainer.epochs not under a cosine
    schedule, whose restored state keeps the length it was built for)."""
    from .config import ABSENT, RESUME_MAY_CHANGE, changed_settings, override, override_text, stored_config

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
    text = lambda value: "(not set)" if value is ABSENT else override_text(value)
    shown = ", ".join(f"{key}={text(old)} (today {text(new)})" for key, old, new in changed[:8])
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    fix = " ".join(override(key, old) for key, old, _ in changed)
    raise DWNError(f"checkpoint {str(resume)!r} was trained with {shown}{more}; a resumed run continues with the "
                   f"settings it was trained with: add `{fix}` to the command (or train with new settings in a "
                   "new run folder).")


def _restore_encoder(cfg, state):
    from .model import build_encoder

    encoder = build_encoder(cfg.encoding)
    load_state(encoder, state["encoder"], "the resumed checkpoint's encoder")
    return encoder


def _train(cfg, run_dir: Path, ctx) -> float:
    t, device = cfg.trainer, ctx.device
    resume = _resume_path(cfg, run_dir)
    state = load_checkpoint(resume) if resume is not None else None

    if state is not None:
        lacking = [key for key in ("optimizer", "rng") if not isinstance(state.get(key), dict)]
        if lacking:  # what only a resume needs (dwn-eval and dwn-export read such a checkpoint)
            raise DWNError(f"checkpoint {str(resume)!r} cannot be resumed: it has no {' or '.join(lacking)} state; "
                           "evaluate or export it, or start a fresh run.")
        _check_resumable(cfg, state, resume)
    if state is not None and state["epoch"] >= t.epochs:
        raise DWNError(f"checkpoint {str(resume)!r} has already trained {state['epoch']} epochs and trainer.epochs="
                       f"{t.epochs}: nothing is left to train; raise trainer.epochs to continue.")
    torch.manual_seed(t.seed)
    data = prepare_data(cfg, device, encoder=_restore_encoder(cfg, state) if state else None,
                        expect=(state["data"], f"checkpoint {str(resume)!r}") if state else None)
    # on a GPU the host holds the parameters only while building; on the CPU it trains them too
    model = build_model(cfg.model, data.in_features, data.num_classes,
                        bytes_per_parameter=16 if device.type == "cpu" else 4).to(device)
    _set_backend(model, t)
    if ctx.main:
        console.log.info(console.model_summary(model))
    graphs = captures(t.cuda_graphs, device, t.strategy, cfg.optimizer.kind)
    if ctx.main and graphs:
        console.log.info("training step: captured in a CUDA graph at the first full batch, then replayed "
                         "(trainer.cuda_graphs=%s)", str(t.cuda_graphs).lower())
    optimizer = build_optimizer(cfg.optimizer, model, capturable=graphs)
    scheduler = build_scheduler(cfg.scheduler, optimizer, t.epochs)
    monitor = monitor_key(t)
    higher = not monitor.endswith("loss")
    best, start_epoch, step = None, 1, 0
    rundir.begin(run_dir)  # the first write of this run's records: the folder is this run's from here
    if state is None and ctx.main:
        _clear_records(run_dir)
    log = MetricsLog(run_dir, tensorboard=cfg.logger.kind == "tensorboard", enabled=ctx.main)
    if state is not None:
        load_state(model, state["model"], f"checkpoint {str(resume)!r}")
        load_optimizer_state(optimizer, state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        best, start_epoch, step = state["best_metric"], state["epoch"] + 1, state["step"]
        if ctx.main:
            console.log.info("resumed from %s at epoch %d", resume, state["epoch"])
    log.keep_through(start_epoch - 1)

    y_train = data.splits["train"][1]
    inputs = _train_inputs(data, cfg.dataset.augment.shift, ctx)
    plain_config = stored_paths_absolute(OmegaConf.to_container(cfg, resolve=True))
    trained = ctx.wrap(model)
    step_fn = _make_step(trained, optimizer, _objective(model, cfg.model.regularizer), t, graphs)
    # the checkpoint on disk that a resume would start from: (epoch, path)
    progress = {"epoch": start_epoch, "step": step, "saved": (state["epoch"], resume) if state is not None else None}
    try:
        with _interrupt_between_steps(progress):
            for epoch in range(start_epoch, t.epochs + 1):
                progress["epoch"] = epoch
                row = _train_epoch(trained, step_fn, optimizer, inputs, y_train, epoch, t, progress, ctx)
                if scheduler is not None:
                    scheduler.step()
                if epoch % t.eval_every == 0 or epoch == t.epochs:
                    for name in ("val", "test"):
                        if name in data.splits:
                            row[f"{name}_acc"] = evaluate(model, *data.splits[name], t.eval_batch_size, ctx)[0]
                if not ctx.main:
                    continue
                console.log.info(console.epoch_line(row))
                log.append(row)  # before the checkpoint: a crash in between only redoes this epoch
                improved = improves(row.get(monitor), best, higher)
                if improved:
                    best = row[monitor]
                payload = make_payload(model=model, encoder=data.encoder, optimizer=optimizer, scheduler=scheduler,
                                       epoch=epoch, step=progress["step"], best_metric=best, monitor=monitor,
                                       config=plain_config, data=data.describe())
                if improved and t.checkpoint.save_best:
                    save_checkpoint(payload, run_dir / "checkpoints" / "best.pt")
                    if not t.checkpoint.save_last:  # then the one a resume can start from
                        progress["saved"] = (epoch, run_dir / "checkpoints" / "best.pt")
                if t.checkpoint.save_last:
                    save_checkpoint(payload, run_dir / "checkpoints" / "last.pt")
                    progress["saved"] = (epoch, run_dir / "checkpoints" / "last.pt")
            _stop_if_asked(progress)  # Ctrl-C during the last evaluation or checkpoint
    except KeyboardInterrupt:  # Ctrl-C anywhere in the loop: say where, and how to go on
        raise Interrupted(_interrupted(progress, run_dir, _resume_words())) from None
    if not ctx.main:
        return float("nan")
    if t.plot and log.rows:
        log.plot(run_dir / "curves.png")
    log.close()
    final = log.rows[-1] if log.rows else {}
    console.summary_table("dwn-train", {"run dir": str(run_dir), f"best {monitor}": best,
                                        "final test_acc": final.get("test_acc"), "epochs": t.epochs})
    return float(best) if best is not None else float("nan")


def _interrupted(progress: dict, run_dir: Path, words=()) -> str:
    """The Ctrl-C message: where the run stopped and the command that resumes it (`words`: the
    run's own command-line flags and settings, _resume_words())."""
    epoch, step, saved = progress["epoch"], progress["step"], progress["saved"]
    if saved is None:
        return f"interrupted at epoch {epoch}, step {step}, before any checkpoint was written; start the run again."
    saved_epoch, path = saved
    how = "trainer.resume=auto" if Path(path) == run_dir / "checkpoints" / "last.pt" \
        else f"trainer.resume={_hydra_value(path)}"
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_WORLD_SIZE") or 0) or None
    nodes = world // local if local and world > local else 1
    if world <= 1:
        launcher = ["dwn-train"]
    else:
        launcher = ["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={local or world}",
                    "-m", "dwn_train.cli"]
    command = " ".join(launcher + [shlex.quote(w) for w in (*words, how, f"hydra.run.dir={_hydra_value(run_dir)}")])
    where = f" on each of the {nodes} nodes, with the rendezvous flags it was started with" if nodes > 1 else ""
    return (f"interrupted at epoch {epoch}, step {step}; the last checkpoint is epoch {saved_epoch} ({path}); "
            f"resume with `{command}`{where}.")


def _hydra_value(path) -> str:
    """`path` as a Hydra override value: bare where Hydra's grammar takes it so, else in quotes."""
    text = str(path)
    if re.fullmatch(r"[A-Za-z0-9_/.+-]+", text):
        return text
    # in Hydra's quotes a backslash escapes the backslashes before a quote (or the end), and a quote;
    # \${ is a literal ${ rather than an interpolation
    body = re.sub(r"(\\*)(?='|$)", lambda m: m.group(1) * 2, text).replace("'", "\\'").replace("${", "\\${")
    return f"'{body}'"


# Hydra's flags that choose the configuration itself: a resume must repeat them
_CONFIG_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def _resume_words() -> list[str]:
    """This run's command-line words that a resume repeats: Hydra's configuration flags and its task
    overrides (none when train() is called without Hydra), less trainer.resume, which the resume
    command sets itself."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:
        return []
    if not HydraConfig.initialized():
        return []
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("trainer.resume=")]
    return _config_flags(sys.argv[1:]) + overrides


def _config_flags(argv: list[str]) -> list[str]:
    """Hydra's flags in `argv` that choose the configuration itself (--config-name x, -cd=dir, ...)."""
    flags = []
    for i, word in enumerate(argv):
        if word.split("=", 1)[0] in _CONFIG_FLAGS:
            flags += [word] if "=" in word else argv[i:i + 2]
    return flags


@contextmanager
def _interrupt_between_steps(progress: dict):
    """Ctrl-C sets progress['stop'], which _stop_if_asked turns into a KeyboardInterrupt after the
    step, or after the last epoch (a KeyboardInterrupt raised at an arbitrary point can land in a
    finaliser, where Python prints and ignores it, and the run would go on); a second Ctrl-C
    interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum, frame):
        progress["stop"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_if_asked(progress: dict) -> None:
    """Act on a Ctrl-C that _interrupt_between_steps recorded: the loop's safe points call this."""
    if progress.get("stop"):
        raise KeyboardInterrupt


def improves(value, best, higher: bool) -> bool:
    """Whether a monitored value replaces the best so far (None: not measured this epoch); a tie
    keeps the earlier checkpoint."""
    return value is not None and (best is None or (value > best if higher else value < best))


def _objective(model, reg):
    """loss(logits, labels, scale): cross-entropy summed over the shard times `scale` (so that
    DDP's average is the global batch's mean), plus the regulariser's penalty if any."""
    extra = penalty(model, reg.kind, reg.weight)

    def objective(logits, labels, scale):
        loss = nn.functional.cross_entropy(logits, labels, reduction="sum") * scale
        return loss if extra is None else loss + extra()

    return objective


def _make_step(model, optimizer, objective, t, graphs: bool):
    """The training step, chosen once: eager, or a captured CUDA graph (graphs: trainer.cuda_graphs
    resolved by graphs.captures) that falls back to the eager step for a smaller last batch, and
    under cuda_graphs=auto for every batch if the step cannot be captured."""
    def eager(x, y, scale):
        logits = model(x)
        loss = objective(logits, y, scale)
        optimizer.zero_grad(set_to_none=not graphs)  # the graph keeps the .grad tensors it captured
        loss.backward()
        optimizer.step()
        return loss, logits

    if not graphs:
        return eager
    fallback = console.log.warning if t.cuda_graphs == "auto" else None
    return GraphStep(model, optimizer, objective, eager, t.batch_size, fallback=fallback)


def _train_inputs(data, shift: int, ctx):
    """inputs(index, local, generator) -> the float model inputs of this rank's part `local` of the
    global batch `index`: the encoded bits, or (dataset.augment) its images translated by shifts
    drawn for the whole global batch from `generator`, then encoded."""
    bits = data.splits["train"][0]
    if not shift:
        return lambda index, local, generator: bits[local].float()
    encode = augmented_bits(data.train_images, data.encoder, shift)
    return lambda index, local, generator: encode(local, ctx.shard(draw_shifts(len(index), shift, generator)))


def _train_epoch(model, step_fn, optimizer, inputs, y_train, epoch: int, t, progress: dict, ctx) -> dict:
    """One pass over the data in seeded random order; returns the metrics row and counts the global
    step in progress['step']. The epoch's generator also draws the augmentation, so a resumed epoch
    repeats it exactly."""
    model.train()
    generator = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
    order = torch.randperm(len(y_train), generator=generator)
    batches = order.to(y_train.device).split(t.batch_size)
    lr = current_lr(optimizer)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    with console.epoch_progress(epoch, t.epochs, len(batches), enabled=ctx.main) as update:
        for done, index in enumerate(batches, 1):
            local = ctx.shard(index)  # this rank's part of the global batch
            x, y = inputs(index, local, generator), y_train[local]
            scale = ctx.world / len(index)
            loss, logits = step_fn(x, y, scale)
            progress["step"] += 1
            _stop_if_asked(progress)
            loss_sum += loss.item() / scale  # with a regulariser this includes its penalty
            correct += (logits.argmax(-1) == y).sum().item()
            seen += len(y)
            update(done, loss_sum / seen, correct / seen, seen * ctx.world / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = ctx.sum(loss_sum, correct, seen)
    return {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_acc": None,
            "test_acc": None, "lr": lr, "samples_per_s": seen / seconds, "seconds": seconds}
