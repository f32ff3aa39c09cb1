"""trainer.cuda_graphs=true: one training step (forward, backward, optimizer step) captured in a
CUDA graph and replayed for every full batch, since at small batches launch overhead dominates.

Inputs are copied into static buffers before each replay; a last, smaller batch runs eagerly.
The optimizer must be built with capturable=True (build_optimizer does so when asked).
"""

from __future__ import annotations

import torch


class GraphStep:
    """step(x, y) -> (loss, logits) for batches of exactly `batch_size` samples, replayed."""

    def __init__(self, model, optimizer, loss_fn, x_example, y_example, warmup: int = 3):
        self.static_x, self.static_y = x_example.clone(), y_example.clone()
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the capture: kernels compile, caches fill
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.logits = self._step()

    def _step(self):
        self.optimizer.zero_grad(set_to_none=False)
        logits = self.model(self.static_x)
        loss = self.loss_fn(logits, self.static_y)
        loss.backward()
        self.optimizer.step()
        return loss, logits

    def __call__(self, x, y):
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.loss, self.logits
