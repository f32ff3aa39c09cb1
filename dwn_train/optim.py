"""Optimizers and learning-rate schedules from the `optimizer` and `scheduler` config groups:
one table per group, kind -> builder. Values are checked before any data loads
(dwn_train/validate.py); the builders trust them.
"""

from __future__ import annotations

import torch


def _adam(cls):
    def build(cfg, params, device, capturable: bool):
        # fused kernels: one pass over the (large) mapping weights per step, also under CUDA graphs
        # (on an H200 the foreach step took 0.65 ms of the recipe's 1.1 ms captured step). Capturable
        # (CUDA graphs) keeps the learning rate on the device, so a replayed step reads the
        # schedule's current value instead of one baked in at capture; the arithmetic is the same
        # fused kernel's either way, so eager and captured training take the same steps.
        lr = torch.tensor(float(cfg.lr), device=device) if capturable else cfg.lr
        return cls(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=True,
                   capturable=capturable)
    return build


def _sgd(cfg, params, device, capturable: bool):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


OPTIMIZERS = {"adam": _adam(torch.optim.Adam), "adamw": _adam(torch.optim.AdamW), "sgd": _sgd}
# kinds that CUDA graph capture can replay with a live learning rate (trainer.cuda_graphs)
CAPTURABLE = ("adam", "adamw")

SCHEDULERS = {
    "none": lambda cfg, optimizer, epochs: None,
    "step": lambda cfg, optimizer, epochs: torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size,
                                                                            gamma=cfg.gamma),
    "multistep": lambda cfg, optimizer, epochs: torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma),
    "cosine": lambda cfg, optimizer, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs, eta_min=cfg.min_lr),
}


def build_optimizer(cfg, model: torch.nn.Module, capturable: bool = False) -> torch.optim.Optimizer:
    """The `optimizer` group's optimizer over the model's parameters; capturable=True builds it for
    CUDA graph capture (adam and adamw only; see CAPTURABLE)."""
    device = next(model.parameters()).device
    return OPTIMIZERS[cfg.kind](cfg, list(model.parameters()), device, capturable)


def build_scheduler(cfg, optimizer, epochs: int):
    """A per-epoch schedule, or None for kind=none."""
    return SCHEDULERS[cfg.kind](cfg, optimizer, epochs)


def load_optimizer_state(optimizer, state: dict) -> None:
    """optimizer.load_state_dict(state), keeping what the builder chose for this run: whether the
    step is capturable or fused, and the learning rate's form (a device tensor under CUDA graphs, a
    float otherwise). load_state_dict would bring back the saved run's choices instead."""
    chosen = [{key: group[key] for key in ("capturable", "fused", "foreach") if key in group}
              for group in optimizer.param_groups]
    lr_like = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keep, like in zip(optimizer.param_groups, chosen, lr_like):
        group.update(keep)
        value = float(group["lr"])
        group["lr"] = torch.tensor(value, dtype=like.dtype, device=like.device) if isinstance(like, torch.Tensor) \
            else value
        if "initial_lr" in group:
            group["initial_lr"] = float(group["initial_lr"])


def current_lr(optimizer) -> float:
    """The first parameter group's learning rate as a float (it may be a device tensor)."""
    return float(optimizer.param_groups[0]["lr"])
