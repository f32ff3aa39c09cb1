"""Optimizers and learning-rate schedules from the `optimizer` and `scheduler` config groups."""

from __future__ import annotations

import torch

from .errors import DWNError


def build_optimizer(cfg, model: torch.nn.Module, capturable: bool = False) -> torch.optim.Optimizer:
    """capturable=True keeps Adam's step counters on the device, as CUDA graph capture requires."""
    if cfg.lr <= 0:
        raise DWNError(f"optimizer.lr must be > 0; got {cfg.lr}.")
    params = model.parameters()
    # fused kernels where torch has them: one pass over the (large) mapping weights per step
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                fused=not capturable, capturable=capturable)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                 fused=not capturable, capturable=capturable)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise DWNError(f"optimizer.name={cfg.name!r} is unknown; expected adam, adamw or sgd.")


def build_scheduler(cfg, optimizer, epochs: int):
    """A per-epoch schedule, or None for kind=none."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "step":
        if cfg.step_size < 1:
            raise DWNError(f"scheduler.step_size must be a positive integer; got {cfg.step_size}.")
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if cfg.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr)
    raise DWNError(f"scheduler.kind={cfg.kind!r} is unknown; expected step, multistep, cosine or none.")
