"""dwn-eval's work: rebuild model and encoder from a checkpoint's own config, score a split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from . import console
from .checkpoint import load_checkpoint
from .config import stored_config
from .errors import DWNError
from .model import build_model
from .train import evaluate, prepare_data, resolve_device

SPLITS = ("test", "val", "train")


def per_class(labels: torch.Tensor, preds: torch.Tensor, num_classes: int):
    """Confusion matrix (label x prediction) and per-class support, precision, recall, f1."""
    confusion = torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)
    rows = []
    for c in range(num_classes):
        tp = confusion[c, c].item()
        predicted, support = confusion[:, c].sum().item(), confusion[c].sum().item()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": c, "support": support, "precision": precision, "recall": recall, "f1": f1})
    return confusion, rows


def _frozen(model, data):
    """The model frozen for the training data's input format (see dwn_train/export/freeze.py)."""
    from .export.freeze import InputFormat, freeze

    fmt = InputFormat.infer(data.raw["train"][0].flatten(1).numpy())
    return freeze(model.cpu().eval(), data.encoder.cpu(), fmt)


def _packed_predictions(net, data, split: str) -> torch.Tensor:
    """Classes from the frozen network, 64 samples per word, on the split's quantised inputs
    (identical inputs for byte data such as images)."""
    from .export.packed import predict_packed

    classes, _ = predict_packed(net, net.input.quantise(data.raw[split][0].flatten(1).numpy()))
    return torch.from_numpy(classes)


def run_eval(cfg, run_dir: Path) -> float:
    if cfg.split not in SPLITS:
        raise DWNError(f"split must be one of {', '.join(SPLITS)}; got {cfg.split!r}.")
    if cfg.batch_size < 1:
        raise DWNError(f"batch_size must be a positive integer; got {cfg.batch_size}.")
    payload = load_checkpoint(cfg.checkpoint)
    train_cfg = stored_config(payload["config"])
    if cfg.data_root:
        train_cfg.dataset.root = cfg.data_root
    device = resolve_device(cfg.device)
    data = prepare_data(train_cfg, device, encoder_state=payload["encoder"])
    if cfg.split not in data.splits:
        raise DWNError(f"split={cfg.split} is not available: the run had trainer.val_fraction=0 (no validation split).")
    model = build_model(train_cfg.model, data.in_features, data.num_classes).to(device)
    model.load_state_dict(payload["model"])
    bits, labels = data.splits[cfg.split]
    if cfg.engine not in ("float", "packed"):
        raise DWNError(f"engine must be float or packed; got {cfg.engine!r}.")
    net = _frozen(model, data) if cfg.engine == "packed" or cfg.cost else None  # frozen once, used twice
    if cfg.engine == "packed":
        preds, loss = _packed_predictions(net, data, cfg.split), None  # no logits: no loss
        labels = labels.cpu()
        accuracy = (preds == labels).float().mean().item()
    else:
        accuracy, loss, preds = evaluate(model.to(device), bits, labels, cfg.batch_size)
    confusion, rows = per_class(labels.cpu(), preds.cpu(), data.num_classes)
    console.summary_table(f"dwn-eval ({cfg.split} split, epoch {payload['epoch']})",
                          {"checkpoint": str(cfg.checkpoint), "samples": len(labels), "accuracy": accuracy,
                           "loss": loss})
    console.class_table(rows, confusion.tolist())
    if cfg.cost:
        from .export.cost import cost_report

        console.summary_table("hardware cost of the frozen network", cost_report(net))
    metrics = {"accuracy": accuracy, "loss": loss, "split": cfg.split, "engine": cfg.engine, "samples": len(labels),
               "checkpoint": str(cfg.checkpoint), "epoch": payload["epoch"], "per_class": rows,
               "confusion": confusion.tolist()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if cfg.save_predictions:
        with (run_dir / "predictions.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "label", "prediction"])
            writer.writerows(zip(range(len(labels)), labels.tolist(), preds.tolist()))
    console.log.info("%s accuracy %.4f (%d samples)", cfg.split, accuracy, len(labels))
    return accuracy
