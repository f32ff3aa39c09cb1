"""trainer.cuda_graphs=true: one training step (forward, backward, optimizer step) captured in a
CUDA graph and replayed for every full batch, since at small batches launch overhead dominates.

The first full batch captures: a few warm-up steps on a side stream (kernels compile, buffers and
the optimizer's state are allocated, the layers' inverse mappings are cached), then the model and
optimizer are put back exactly as they were (in place, so the addresses the graph captures stay
valid), so warm-up trains nothing: batch 1 gets one update, as in eager mode. Inputs are copied
into static buffers before each replay; a smaller last batch runs the eager step. The optimizer
must be built with capturable=True (build_optimizer does so when asked), which also keeps its
learning rate on the device, where the scheduler updates it in place.
"""

from __future__ import annotations

import torch


def snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Copies of the parameters and of every tensor in the optimizer's state."""
    return {"params": [p.detach().clone() for p in model.parameters()],
            "state": {id(p): {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                      for p, s in optimizer.state.items()}}


def restore_in_place(model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Put parameters and optimizer state back to `saved` without reallocating anything. State
    created after the snapshot goes back to zero, the value Adam (step, moments) and SGD (a zero
    momentum buffer makes the same first step as none) start from."""
    with torch.no_grad():
        for p, value in zip(model.parameters(), saved["params"]):
            p.copy_(value)
        for p, state in optimizer.state.items():
            before = saved["state"].get(id(p), {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    value.copy_(before[key]) if key in before else value.zero_()


class GraphStep:
    """step(x, y, scale) -> (loss, logits): full batches of `batch_size` replay one captured step,
    other batches run `eager` (the same step without the graph)."""

    def __init__(self, model, optimizer, objective, eager, batch_size: int, warmup: int = 3):
        self.model, self.optimizer, self.objective, self.eager = model, optimizer, objective, eager
        self.batch_size, self.warmup = batch_size, warmup
        self.graph = None

    def _step(self):
        self.optimizer.zero_grad(set_to_none=False)
        logits = self.model(self.static_x)
        loss = self.objective(logits, self.static_y, self.scale)
        loss.backward()
        self.optimizer.step()
        return loss, logits

    def _capture(self, x, y, scale: float) -> None:
        self.static_x, self.static_y, self.scale = x.clone(), y.clone(), scale
        saved = snapshot(self.model, self.optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._step()
            restore_in_place(self.model, self.optimizer, saved)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.logits = self._step()

    def __call__(self, x, y, scale: float):
        if len(x) != self.batch_size:
            return self.eager(x, y, scale)
        if self.graph is None:
            self._capture(x, y, scale)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.loss, self.logits
