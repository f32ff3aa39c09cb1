"""The training step (forward, backward, optimizer step): `eager_step`, or `GraphStep`, the same
step captured in a CUDA graph and replayed for every full batch (trainer.cuda_graphs), since at
small batches launch overhead dominates (on an H200 the MNIST recipe's step at batch 32 takes
0.6 ms replayed against 2.2 ms eager). `auto`, the default, captures on a single CUDA device with
adam or adamw (`captures`); a step that cannot be captured (a host synchronisation inside the
model, say) then trains eagerly after one warning, while `true` makes that an error.

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

from .errors import DWNError, first_line
from .optim import CAPTURABLE


SETTINGS = ("auto", "true", "false")


def eager_step(model, optimizer, objective, set_to_none: bool = True):
    """step(x, y, scale) -> (loss, logits): one training step on a batch, where objective(logits,
    labels, scale) is the loss. set_to_none=False zeroes the .grad tensors in place instead of
    dropping them (a captured graph keeps the ones it captured)."""
    def step(x, y, scale):
        optimizer.zero_grad(set_to_none=set_to_none)  # before the forward: the old gradients are freed first
        logits = model(x)
        loss = objective(logits, y, scale)
        loss.backward()
        optimizer.step()
        return loss, logits

    return step


def setting(value) -> str:
    """trainer.cuda_graphs as one of SETTINGS. Hydra reads true/false in any case as bools, which
    the string field keeps as 'True'/'False' (and checkpoints written before the key was typed
    stored bools); any other value is refused."""
    word = {True: "true", False: "false", "True": "true", "False": "false"}.get(value, value)
    if word not in SETTINGS:
        raise DWNError(f"trainer.cuda_graphs must be auto, true or false; got {value!r}.")
    return word


def captures(value, device: torch.device, strategy: str, optimizer_kind: str) -> bool:
    """Whether the training step is captured: the one decision of trainer.cuda_graphs, which the
    config check (validate.check_train) and the trainer both call. auto captures on a single CUDA
    device with an optimizer whose step a replay can repeat (optim.CAPTURABLE); true insists, and a
    DWNError says what it lacks; false never captures."""
    value = setting(value)
    possible = device.type == "cuda" and strategy == "single" and optimizer_kind in CAPTURABLE
    if value == "true" and not possible:
        raise DWNError("trainer.cuda_graphs=true needs a CUDA device (trainer.device=cuda, or auto on a machine with "
                       f"one), trainer.strategy=single and optimizer {' or '.join(CAPTURABLE)} (auto, the default, "
                       "captures where these hold).")
    return possible if value == "auto" else value == "true"


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
    other batches run `eager` (the same step without the graph). A step that cannot be captured
    raises DWNError, or, given `fallback` (a function taking one message), reports it there once and
    runs every later batch eagerly; the model and optimizer are as before the attempt either way."""

    def __init__(self, model, optimizer, objective, eager, batch_size: int, warmup: int = 3, fallback=None):
        self.model, self.optimizer, self.objective, self.eager = model, optimizer, objective, eager
        self.batch_size, self.warmup, self.fallback = batch_size, warmup, fallback
        self.graph = None
        self.failed = False

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
        previous = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(previous)
        try:
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self._step()
                restore_in_place(self.model, self.optimizer, saved)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.loss, self.logits = self._step()
        except BaseException:
            # torch.cuda.graph leaves its capture stream current when the capture fails
            torch.cuda.set_stream(previous)
            try:
                torch.cuda.synchronize()
            finally:
                restore_in_place(self.model, self.optimizer, saved)
            raise
        self.graph = graph

    def __call__(self, x, y, scale: float):
        if len(x) != self.batch_size or self.failed:
            return self.eager(x, y, scale)
        if self.graph is None:
            try:
                self._capture(x, y, scale)
            except (DWNError, torch.cuda.OutOfMemoryError):  # a fault of the model or of the memory, not of capture
                raise
            except Exception as exc:  # torch raises RuntimeError subclasses; any of them means no graph
                reason = _first_error(exc)
                if self.fallback is None:
                    raise DWNError(f"trainer.cuda_graphs=true: the training step could not be captured in a CUDA "
                                   f"graph ({reason}); set trainer.cuda_graphs=false or auto.") from exc
                self.fallback(f"the training step could not be captured in a CUDA graph ({reason}); training "
                              "without one (trainer.cuda_graphs=false skips the attempt).")
                self.failed = True
                return self.eager(x, y, scale)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        return self.loss, self.logits


def _first_error(exc: BaseException) -> str:
    """first_line of the error that started `exc`'s chain: when an operation inside the capture
    fails, ending the capture raises again, with a message that names no cause."""
    seen = {id(exc)}
    while exc.__context__ is not None and id(exc.__context__) not in seen:
        exc = exc.__context__
        seen.add(id(exc))
    return first_line(exc)
