"""Scoring a model on an encoded split: accuracy, loss and predictions; per-class statistics."""

from __future__ import annotations

import torch
from torch import nn

from .mapping import cached_wiring


@torch.no_grad()
def evaluate(model, bits, labels, batch_size: int, ctx=None):
    """(accuracy, mean cross-entropy, predictions) over a whole split; under DDP each rank scores
    its share and the counts are summed (the predictions are then this rank's share)."""
    if ctx is not None and ctx.world > 1:
        share = torch.arange(len(labels), device=labels.device).tensor_split(ctx.world)[ctx.rank]
        accuracy, loss, preds = evaluate(model, bits[share], labels[share], batch_size)
        correct, total, loss_sum = ctx.sum(accuracy * len(share), len(share), loss * len(share))
        return correct / total, loss_sum / total, preds
    if len(labels) == 0:  # a DDP rank whose share of a tiny split is empty still joins the sums
        return 0.0, 0.0, labels[:0]
    model.eval()
    preds, loss = [], 0.0
    with cached_wiring(model):  # the weights do not change here: one argmax for all batches
        for start in range(0, len(bits), batch_size):
            logits = model(bits[start:start + batch_size].float())
            loss += nn.functional.cross_entropy(logits, labels[start:start + batch_size], reduction="sum").item()
            preds.append(logits.argmax(-1))
    preds = torch.cat(preds)
    return (preds == labels).float().mean().item(), loss / len(labels), preds


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
