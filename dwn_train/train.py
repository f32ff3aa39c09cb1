"""The training run, read top to bottom: check -> fresh or resumed -> data -> model -> epochs -> checkpoints.

The whole encoded data set lives on the training device as uint8 bits; each epoch draws a
permutation from a generator seeded by (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one without replaying any random stream. What a run folder holds, what a fresh
run refuses, what a resume checks and loads, and what Ctrl-C says live in dwn_train/run/.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from . import console, distributed
from .augment import augmented_bits, draw_shifts
from .checkpoint import make_payload, save_checkpoint
from .config import stored_paths_absolute
from .errors import Interrupted
from .graphs import GraphStep, captures, eager_step, setting
from .layers import LUTLayer
from .metrics import MetricsLog
from .model import build_model
from .optim import build_optimizer, build_scheduler, current_lr
from .prepare import prepare_data, resolve_device
from .regularizers import penalty
from .run import resume
from .run.command import Command
from .run.folder import RunFolder
from .run.interrupt import Progress, by, exit_code, interrupted, stop_between_steps
from .run.lock import begin, own
from .scoring import evaluate
from .validate import check_train, monitor_key


def train(cfg, run_dir: Path, command: Command = Command()) -> float:
    """Train as `cfg` says, writing into `run_dir`; returns the best monitored metric. `command`:
    how the run was launched, for the resume command that Ctrl-C prints (dwn-train passes it)."""
    t = cfg.trainer
    check_train(cfg)  # every value, before any data is loaded
    device = resolve_device(t.device)
    if t.threads:
        torch.set_num_threads(t.threads)
    folder = RunFolder(run_dir)
    # rank 0 owns the run folder (lock, writable, stale temporaries gone); other DDP ranks share it
    others = t.strategy == "ddp" and distributed.launching_rank() > 0
    with nullcontext() if others else own(folder):
        ctx = distributed.setup(t.strategy, device)
        try:
            return _train(cfg, folder, ctx, command)
        finally:
            distributed.teardown(ctx)


def _train(cfg, folder: RunFolder, ctx, command: Command) -> float:
    t = cfg.trainer
    resumed = resume.start(cfg, folder)  # None for a fresh run; what must be refused is, before data loads
    if resumed is not None and resumed.finished:  # trainer.resume=auto met a finished run: nothing to do
        if ctx.main:
            console.log.info(resumed.done(folder))
        return float(resumed.best) if resumed.best is not None else float("nan")
    torch.manual_seed(t.seed)
    data = prepare_data(cfg, ctx.device, encoder=resumed.encoder(cfg.encoding) if resumed else None,
                        expect=resumed.expect if resumed else None)
    samples = len(data.splits["train"][1])
    if t.batch_size > samples and ctx.main:
        console.log.warning("trainer.batch_size=%d is larger than the %d training samples: each epoch is one step on "
                            "all of them.", t.batch_size, samples)
    model, optimizer, scheduler, graphs = _build(cfg, data, ctx)
    begin(folder)  # the first write of this run's records: the folder is this run's from here
    if resumed is None and ctx.main:
        folder.clear()  # trainer.resume=overwrite: nothing of the earlier run may be read as this one's
    log = MetricsLog(folder.metrics, folder.metrics_csv, enabled=ctx.main,
                     tensorboard=folder.tensorboard if cfg.logger.kind == "tensorboard" else None)
    progress, best = Progress(epoch=1, step=0), None
    if resumed is not None:
        resumed.load_into(model, optimizer, scheduler)
        progress, best = Progress(resumed.epoch + 1, resumed.step, saved=(resumed.epoch, resumed.path)), resumed.best
        if ctx.main:
            console.log.info("resumed from %s at epoch %d", resumed.path, resumed.epoch)
    log.keep_through(progress.epoch - 1)
    checkpoints = _Checkpoints(cfg, folder, best, model=model, encoder=data.encoder, optimizer=optimizer,
                               scheduler=scheduler, data=data.describe())
    inputs, labels = _train_inputs(data, cfg.dataset.augment.shift, ctx), data.splits["train"][1]
    trained = ctx.wrap(model)
    step = _make_step(trained, optimizer, _objective(model, cfg.model.regularizer), t, graphs)
    try:
        with stop_between_steps(progress):
            for epoch in range(progress.epoch, t.epochs + 1):
                progress.epoch = epoch
                row = _train_epoch(trained, step, optimizer, inputs, labels, epoch, t, progress, ctx)
                if scheduler is not None:
                    scheduler.step()
                if epoch % t.eval_every == 0 or epoch == t.epochs:
                    row.update(_scores(model, data, t.eval_batch_size, ctx))
                if ctx.main:
                    console.log.info(console.epoch_line(row))
                    log.append(row)  # before the checkpoint: a crash in between only redoes this epoch
                    checkpoints.save(row, progress)
            progress.stop_if_asked()  # Ctrl-C during the last evaluation or checkpoint
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGUSR1 anywhere in the loop: say where, and how to go on
        raise Interrupted(interrupted(progress, folder, command, by(exc)), exit_code(exc)) from None
    return _finish(cfg, folder, log, checkpoints, ctx)


def _build(cfg, data, ctx):
    """(model, optimizer, scheduler, graphs): the network on the training device with every LUT
    layer's backend set, and whether its step is captured (graphs.captures)."""
    t, device = cfg.trainer, ctx.device
    # on a GPU the host holds the parameters only while building; on the CPU it trains them too
    model = build_model(cfg.model, data.in_features, data.num_classes,
                        bytes_per_parameter=16 if device.type == "cpu" else 4).to(device)
    for module in model.modules():  # the LUT implementation of every layer (see LUTLayer.backend)
        if isinstance(module, LUTLayer):
            module.backend, module.deterministic = t.backend, t.deterministic
    if ctx.main:
        console.log.info(console.model_summary(model))
    graphs = captures(t.cuda_graphs, device, t.strategy, cfg.optimizer.kind)
    if ctx.main and graphs:
        console.log.info("training step: captured in a CUDA graph at the first full batch, then replayed "
                         "(trainer.cuda_graphs=%s)", setting(t.cuda_graphs))
    optimizer = build_optimizer(cfg.optimizer, model, capturable=graphs)
    return model, optimizer, build_scheduler(cfg.scheduler, optimizer, t.epochs), graphs


def _scores(model, data, batch_size: int, ctx) -> dict:
    """Accuracy on the validation and test splits the run has."""
    return {f"{name}_acc": evaluate(model, *data.splits[name], batch_size, ctx)[0]
            for name in ("val", "test") if name in data.splits}


class _Checkpoints:
    """At the end of each epoch (rank 0): best.pt when the monitored metric improves, last.pt
    always (as trainer.checkpoint says), and progress.saved naming the one a resume starts from.
    `parts`: what make_payload takes besides the epoch's figures."""

    def __init__(self, cfg, folder: RunFolder, best, **parts):
        self.keep, self.folder, self.best, self.parts = cfg.trainer.checkpoint, folder, best, parts
        self.monitor = monitor_key(cfg.trainer)
        self.higher = not self.monitor.endswith("loss")
        self.config = stored_paths_absolute(OmegaConf.to_container(cfg, resolve=True))

    def save(self, row: dict, progress: Progress) -> None:
        improved = improves(row.get(self.monitor), self.best, self.higher)
        if improved:
            self.best = row[self.monitor]
        payload = lambda resumable: make_payload(**self.parts, epoch=progress.epoch, step=progress.step,  # noqa: E731
                                                 best_metric=self.best, monitor=self.monitor, config=self.config,
                                                 resumable=resumable)
        if self.keep.save_last:  # first: a kill between the two writes leaves a resumable folder
            save_checkpoint(payload(resumable=True), self.folder.last)
            progress.saved = (progress.epoch, self.folder.last)
        if improved and self.keep.save_best:
            # beside a last.pt, best.pt holds what evaluation and export read; alone, what a resume reads too
            save_checkpoint(payload(resumable=not self.keep.save_last), self.folder.best)
            if not self.keep.save_last:  # then the one a resume can start from
                progress.saved = (progress.epoch, self.folder.best)


def _finish(cfg, folder: RunFolder, log: MetricsLog, checkpoints: _Checkpoints, ctx) -> float:
    """Curves and the summary table (rank 0); the best monitored metric."""
    if not ctx.main:
        return float("nan")
    if cfg.trainer.plot and log.rows:
        log.plot(folder.curves)
    log.close()
    final, best = log.rows[-1] if log.rows else {}, checkpoints.best
    console.summary_table("dwn-train", {"run dir": str(folder.path), f"best {checkpoints.monitor}": best,
                                        "final test_acc": final.get("test_acc"), "epochs": cfg.trainer.epochs})
    return float(best) if best is not None else float("nan")


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
    eager = eager_step(model, optimizer, objective, set_to_none=not graphs)  # a graph keeps its .grad tensors
    if not graphs:
        return eager
    fallback = console.log.warning if setting(t.cuda_graphs) == "auto" else None
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


def _train_epoch(model, step_fn, optimizer, inputs, y_train, epoch: int, t, progress: Progress, ctx) -> dict:
    """One pass over the data in seeded random order; returns the metrics row and counts the global
    step in progress.step. The epoch's generator also draws the augmentation, so a resumed epoch
    repeats it exactly."""
    model.train()
    generator = torch.Generator().manual_seed(t.seed * 100_003 + epoch)
    order = torch.randperm(len(y_train), generator=generator)
    batches = order.to(y_train.device).split(t.batch_size)
    lr = current_lr(optimizer)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    with console.epoch_progress(epoch, t.epochs, len(batches), enabled=ctx.main, samples=len(y_train)) as update:
        for done, index in enumerate(batches, 1):
            local = ctx.shard(index)  # this rank's part of the global batch
            x, y = inputs(index, local, generator), y_train[local]
            scale = ctx.world / len(index)
            loss, logits = step_fn(x, y, scale)
            progress.step += 1
            progress.stop_if_asked()
            loss_sum += loss.item() / scale  # with a regulariser this includes its penalty
            correct += (logits.argmax(-1) == y).sum().item()
            seen += len(y)
            update(done, loss_sum / seen, correct / seen, seen * ctx.world / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = ctx.sum(loss_sum, correct, seen)
    return {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_acc": None,
            "test_acc": None, "lr": lr, "samples_per_s": seen / seconds, "seconds": seconds}
