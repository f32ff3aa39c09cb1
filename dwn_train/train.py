"""The training run, read top to bottom: data -> encoder -> model -> epochs -> checkpoints.

The whole encoded data set lives on the training device as uint8 bits; each epoch draws a
permutation from a generator seeded by (seed, epoch), so a resumed run sees the same batches as
an uninterrupted one without replaying any random stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from . import console, distributed
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import load_dataset
from .errors import DWNError
from .graphs import GraphStep
from .layers import LUTLayer
from .mapping import cached_wiring
from .metrics import MetricsLog
from .model import build_encoder, build_model, input_width
from .optim import build_optimizer, build_scheduler
from .regularizers import regularization


@dataclass
class Prepared:
    """Encoded splits on the device: name -> (bits uint8 (S, W), labels int64 (S,)); raw: the
    same splits' features before encoding, on the CPU."""
    splits: dict
    encoder: nn.Module
    num_classes: int
    feature_shape: tuple
    in_features: int
    raw: dict


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise DWNError(f"device must be auto, cpu or cuda; got {name!r}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise DWNError("device=cuda was asked for but no CUDA device is available; use device=cpu or auto.")
    return torch.device(name)


def _set_backend(model, name: str, device) -> None:
    """Choose the LUT implementation of every layer (see LUTLayer.backend)."""
    if name not in ("auto", "torch", "cuda"):
        raise DWNError(f"trainer.backend must be auto, torch or cuda; got {name!r}.")
    if name == "cuda":
        from . import kernels

        if device.type != "cuda" or not kernels.available():
            raise DWNError("trainer.backend=cuda needs trainer.device=cuda and CuPy "
                           "(pip install 'dwn-train[cuda]'); use backend=auto or torch.")
    for module in model.modules():
        if isinstance(module, LUTLayer):
            module.backend = name


def encode(encoder, x: torch.Tensor, device, chunk: int = 8192) -> torch.Tensor:
    """Thermometer bits of x (S, *F) as uint8 (S, F * z), chunked to bound memory."""
    out = torch.empty(len(x), input_width(x.shape[1:], encoder.num_bits), dtype=torch.uint8)
    for start in range(0, len(x), chunk):
        out[start:start + chunk] = encoder.binarize(x[start:start + chunk]).flatten(1).to(torch.uint8)
    return out.to(device)


def prepare_data(cfg, device, encoder_state=None) -> Prepared:
    """Load, split off validation, fit (or restore) the encoder on train only, and encode."""
    data = load_dataset(cfg.dataset)
    frac = cfg.trainer.val_fraction
    if not 0.0 <= frac < 1.0:
        raise DWNError(f"trainer.val_fraction must lie in [0, 1); got {frac}.")
    x_train, y_train = data.x_train, data.y_train
    splits_raw = {"test": (data.x_test, data.y_test)}
    num_val = int(len(x_train) * frac)
    if num_val:
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.trainer.seed))
        splits_raw["val"] = (x_train[order[:num_val]], y_train[order[:num_val]])
        x_train, y_train = x_train[order[num_val:]], y_train[order[num_val:]]
    splits_raw["train"] = (x_train, y_train)
    encoder = build_encoder(cfg.encoding)
    if encoder_state is not None:
        encoder.load_state_dict(encoder_state)
    else:
        encoder.fit(x_train)
    splits = {name: (encode(encoder, x, device), y.to(device)) for name, (x, y) in splits_raw.items()}
    return Prepared(splits, encoder, data.num_classes, data.feature_shape,
                    input_width(data.feature_shape, encoder.num_bits), splits_raw)


@torch.no_grad()
def evaluate(model, bits, labels, batch_size: int, ctx=None):
    """(accuracy, mean cross-entropy, predictions) over a whole split; under DDP each rank scores
    its share and the counts are summed (the predictions are then this rank's share)."""
    if ctx is not None and ctx.world > 1:
        share = torch.arange(len(labels), device=labels.device).tensor_split(ctx.world)[ctx.rank]
        accuracy, loss, preds = evaluate(model, bits[share], labels[share], batch_size)
        correct, total, loss_sum = ctx.sum(accuracy * len(share), len(share), loss * len(share))
        return correct / total, loss_sum / total, preds
    model.eval()
    preds, loss = [], 0.0
    with cached_wiring(model):  # the weights do not change here: one argmax for all batches
        for start in range(0, len(bits), batch_size):
            logits = model(bits[start:start + batch_size].float())
            loss += nn.functional.cross_entropy(logits, labels[start:start + batch_size], reduction="sum").item()
            preds.append(logits.argmax(-1))
    preds = torch.cat(preds)
    return (preds == labels).float().mean().item(), loss / len(labels), preds


def _resume_path(cfg, run_dir: Path):
    resume = cfg.trainer.resume
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    return Path(resume)


def _monitor(cfg, has_val: bool) -> str:
    monitor = cfg.trainer.checkpoint.monitor
    if monitor == "auto":
        return "val_acc" if has_val else "train_acc"
    allowed = ("train_loss", "train_acc") + (("val_acc",) if has_val else ())
    if monitor not in allowed:
        raise DWNError(f"trainer.checkpoint.monitor must be auto or one of {', '.join(allowed)} (the test split "
                       f"never chooses; val_acc needs trainer.val_fraction > 0); got {monitor!r}.")
    return monitor


def _check_trainer(t) -> None:
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
        if getattr(t, key) < 1:
            raise DWNError(f"trainer.{key} must be a positive integer; got {getattr(t, key)}.")
    if t.threads is not None and t.threads < 1:
        raise DWNError(f"trainer.threads must be a positive integer or null; got {t.threads}.")


def train(cfg, run_dir: Path) -> float:
    """Train as `cfg` says, writing into `run_dir`; returns the best monitored metric."""
    t = cfg.trainer
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_trainer(t)
    if t.threads:
        torch.set_num_threads(t.threads)
    ctx = distributed.setup(t.strategy, resolve_device(t.device))
    try:
        return _train(cfg, run_dir, ctx)
    finally:
        distributed.teardown(ctx)


def _train(cfg, run_dir: Path, ctx) -> float:
    t, device = cfg.trainer, ctx.device
    resume = _resume_path(cfg, run_dir)
    state = load_checkpoint(resume) if resume is not None else None

    torch.manual_seed(t.seed)
    data = prepare_data(cfg, device, encoder_state=state["encoder"] if state else None)
    model = build_model(cfg.model, data.in_features, data.num_classes).to(device)
    _set_backend(model, t.backend, device)
    if t.cuda_graphs and (device.type != "cuda" or t.strategy != "single"):
        raise DWNError("trainer.cuda_graphs=true needs trainer.device=cuda and trainer.strategy=single.")
    optimizer = build_optimizer(cfg.optimizer, model, capturable=t.cuda_graphs)
    scheduler = build_scheduler(cfg.scheduler, optimizer, t.epochs)
    monitor = _monitor(cfg, "val" in data.splits)
    higher = not monitor.endswith("loss")
    best, start_epoch, step = None, 1, 0
    log = MetricsLog(run_dir, tensorboard=cfg.logger.kind == "tensorboard", enabled=ctx.main)
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise DWNError(f"checkpoint {str(resume)!r} does not fit the configured model (different layers?).") from exc
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        best, start_epoch, step = state["best_metric"], state["epoch"] + 1, state["step"]
        if ctx.main:
            console.log.info("resumed from %s at epoch %d", resume, state["epoch"])
    log.keep_through(start_epoch - 1)

    x_train, y_train = data.splits["train"]
    plain_config = OmegaConf.to_container(cfg, resolve=True)
    data_info = {"num_classes": data.num_classes, "feature_shape": list(data.feature_shape),
                 "in_features": data.in_features}
    trained = ctx.wrap(model)
    graph = {} if t.cuda_graphs else None
    for epoch in range(start_epoch, t.epochs + 1):
        row, step = _train_epoch(trained, optimizer, x_train, y_train, epoch, t, step, cfg.model.regularizer, ctx,
                                 graph)
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
        improved = row.get(monitor) is not None and (best is None or (row[monitor] > best if higher else row[monitor] < best))
        if improved:
            best = row[monitor]
        payload = {"model": model.state_dict(), "encoder": data.encoder.state_dict(),
                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                   "rng": rng_state(), "epoch": epoch, "step": step, "best_metric": best, "monitor": monitor,
                   "config": plain_config, "data": data_info}
        if improved and t.checkpoint.save_best:
            save_checkpoint(payload, run_dir / "checkpoints" / "best.pt")
        if t.checkpoint.save_last:
            save_checkpoint(payload, run_dir / "checkpoints" / "last.pt")
    if not ctx.main:
        return float("nan")
    if t.plot and log.rows:
        log.plot(run_dir / "curves.png")
    log.close()
    final = log.rows[-1] if log.rows else {}
    console.summary_table("dwn-train", {"run dir": str(run_dir), f"best {monitor}": best,
                                        "final test_acc": final.get("test_acc"), "epochs": t.epochs})
    return float(best) if best is not None else float("nan")


def _train_epoch(model, optimizer, x_train, y_train, epoch: int, t, step: int, reg, ctx, graph=None):
    """One pass over the data; `graph` (a dict) holds the captured GraphStep when cuda_graphs."""
    model.train()
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(t.seed * 100_003 + epoch))
    order = order.to(x_train.device)
    batches = order.split(t.batch_size)
    lr = optimizer.param_groups[0]["lr"]
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    with console.epoch_progress(epoch, t.epochs, len(batches), enabled=ctx.main) as update:
        for done, index in enumerate(batches, 1):
            local = ctx.shard(index)  # this rank's part of the global batch
            x, y = x_train[local].float(), y_train[local]
            scale = ctx.world / len(index)

            def objective(logits, labels):
                # summed over the shard, scaled so that DDP's average is the global batch's mean
                loss = nn.functional.cross_entropy(logits, labels, reduction="sum") * scale
                penalty = regularization(model, reg.kind) if reg.weight else None
                return loss if penalty is None else loss + reg.weight * penalty

            if graph is not None and len(index) == t.batch_size:
                if graph.get("step") is None:
                    graph["step"] = GraphStep(model, optimizer, objective, x, y)
                loss, logits = graph["step"](x, y)
            else:
                logits = model(x)
                loss = objective(logits, y)
                optimizer.zero_grad(set_to_none=graph is None)
                loss.backward()
                optimizer.step()
            step += 1
            loss_sum += loss.item() / scale  # with a regulariser this includes its penalty
            correct += (logits.argmax(-1) == y).sum().item()
            seen += len(y)
            update(done, loss_sum / seen, correct / seen, seen * ctx.world / (time.perf_counter() - start))
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = ctx.sum(loss_sum, correct, seen)
    return {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen, "val_acc": None,
            "test_acc": None, "lr": lr, "samples_per_s": seen / seconds, "seconds": seconds}, step
