"""dwn-eval's work: rebuild model and encoder from a checkpoint's own config, score a split."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import torch

from . import console
from .checkpoint import data_overrides, restore
from .errors import DWNError
from .export.freeze import accuracy_gap
from .prepare import prepare_data, resolve_device
from .scoring import evaluate, per_class
from .validate import check_eval


def _frozen(model, data):
    """The model frozen for the input format of the whole training split, validation part included,
    as dwn-export infers it (see dwn_train/export/freeze.py), so both freeze the same network."""
    from .export.freeze import freeze, input_format

    parts = [data.raw[name][0] for name in ("train", "val") if name in data.raw]
    model, encoder = model.cpu().eval(), data.encoder.cpu()
    return freeze(model, encoder, input_format(model, encoder, torch.cat(parts).flatten(1).numpy()))


def _packed_predictions(net, data, split: str, threads: int) -> torch.Tensor:
    """Classes from the frozen network on the split's features, quantised by its input contract
    (identical inputs for byte data such as images): compiled code on `threads` threads (0: every
    core), or numpy when no C compiler is found (see dwn_train/export/compiled.py)."""
    from .export.compiled import predict_features

    start = time.perf_counter()
    classes, _ = predict_features(net, data.raw[split][0], threads=threads or None, scores=False)
    milliseconds = 1e3 * (time.perf_counter() - start)
    console.log.info("engine=packed classified %d samples in %.1f ms", len(classes), milliseconds)
    return torch.from_numpy(classes)


def _note(sentence: str) -> None:
    """What dwn-eval noticed and scores anyway, as one line on stderr (where its errors go)."""
    print(f"dwn-eval: note: {sentence}; scoring it as it is.", file=sys.stderr)


def run_eval(cfg, run_dir: Path) -> float:
    check_eval(cfg)
    if cfg.engine == "packed":  # a CC that names no compiler is refused before any work
        from .export.cbuild import find_compiler

        find_compiler()
    device = resolve_device(cfg.device)
    restored = restore(cfg.checkpoint, data_overrides(cfg))
    train_cfg, payload = restored.config, restored.payload
    data = prepare_data(train_cfg, device, encoder=restored.encoder,
                        expect=(restored.data, f"checkpoint {str(cfg.checkpoint)!r}"), only=(cfg.split,),
                        on_other_data=_note)  # scoring other data may be deliberate: say so, and score it
    if cfg.split not in data.splits:
        raise DWNError(f"split={cfg.split} is not available: the run had trainer.val_fraction=0 (no validation split).")
    model = restored.model  # on the CPU: frozen there, moved to the device to score
    bits, labels = data.splits[cfg.split]
    net = _frozen(model, data) if cfg.engine == "packed" or cfg.cost else None  # frozen once, used twice
    if cfg.engine == "packed":
        preds, loss = _packed_predictions(net, data, cfg.split, cfg.threads), None  # no logits: no loss
        accuracy = (preds == labels.cpu()).float().mean().item()
        float_accuracy = evaluate(model.to(device), bits, labels, cfg.batch_size)[0]  # what the precision costs
        labels = labels.cpu()
    else:
        accuracy, loss, preds = evaluate(model.to(device), bits, labels, cfg.batch_size)
    confusion, rows = per_class(labels.cpu(), preds.cpu(), data.num_classes)
    names = data.class_names
    for row in rows:
        row["name"] = names[row["class"]]
    summary = {"checkpoint": str(cfg.checkpoint), "samples": len(labels), "accuracy": accuracy}
    if cfg.engine == "packed":
        summary["accuracy: float / frozen"] = f"{100 * float_accuracy:.2f} % / {100 * accuracy:.2f} %"
    if loss is not None:  # the packed engine has no logits, so no loss
        summary["loss"] = loss
    console.summary_table(f"dwn-eval ({cfg.split} split, epoch {payload['epoch']}, engine {cfg.engine})", summary)
    if cfg.engine == "packed" and (gap := accuracy_gap(float_accuracy, accuracy, cfg.split)):
        console.log.warning(gap)
    console.class_table(rows, confusion.tolist())
    if cfg.cost:
        from .export.cost import cost_report

        from .export.simplify import reduce

        console.summary_table("hardware cost of the frozen network", cost_report(reduce(net), original=net))
    metrics = {"accuracy": accuracy, "loss": loss, "split": cfg.split, "engine": cfg.engine, "samples": len(labels),
               "checkpoint": str(cfg.checkpoint), "epoch": payload["epoch"], "per_class": rows,
               **({"accuracy_float": float_accuracy} if cfg.engine == "packed" else {}),
               "confusion": confusion.tolist()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if cfg.save_predictions:
        with (run_dir / "predictions.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "label", "prediction", "label_name", "prediction_name"])
            writer.writerows((i, a, b, names[a], names[b]) for i, (a, b) in enumerate(zip(labels.tolist(), preds.tolist())))
    console.log.info("%s accuracy %.4f (%d samples); wrote %s", cfg.split, accuracy, len(labels),
                     ", ".join(str(run_dir / f) for f in ("metrics.json", "predictions.csv")
                               if f == "metrics.json" or cfg.save_predictions))
    return accuracy
