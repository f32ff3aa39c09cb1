"""trainer.cuda_graphs on the CPU side: the warm-up is undone in place, and capturable optimizers
keep a learning rate that the schedule moves (the capture itself needs a GPU: tests/test_gpu.py)."""

import contextlib
import copy

import pytest
import torch

import dwn_train as dwn
from dwn_train.errors import DWNError
from dwn_train.graphs import eager_step, restore_in_place, snapshot
from dwn_train.optim import build_optimizer, build_scheduler, current_lr
from conftest import compose


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(dwn.LUTLayer(20, 30, n=3, mapping="learnable"), dwn.LUTLayer(30, 10, n=2),
                               dwn.GroupSum(5))


def _objective(logits, labels, scale):
    """The step's loss as GraphStep calls it."""
    return torch.nn.functional.cross_entropy(logits, labels) * scale


def _step(model, optimizer, x, y):
    """One eager step on the whole batch (scale 1: the batch's mean loss)."""
    eager_step(model, optimizer, _objective, set_to_none=False)(x, y, 1.0)


def test_warmup_is_undone_in_place_so_batch_one_gets_one_update():
    x, y = (torch.rand(16, 20) > 0.5).float(), torch.randint(0, 5, (16,))
    graph_model, eager_model = _model(), _model()
    graph_opt = torch.optim.Adam(graph_model.parameters(), lr=0.05)
    eager_opt = torch.optim.Adam(eager_model.parameters(), lr=0.05)
    saved = snapshot(graph_model, graph_opt)
    for _ in range(3):  # what GraphStep's warm-up does
        _step(graph_model, graph_opt, x, y)
    addresses = [p.data_ptr() for p in graph_model.parameters()]
    state_addresses = [v.data_ptr() for s in graph_opt.state.values() for v in s.values()]
    restore_in_place(graph_model, graph_opt, saved)
    assert addresses == [p.data_ptr() for p in graph_model.parameters()]
    assert state_addresses == [v.data_ptr() for s in graph_opt.state.values() for v in s.values()]
    _step(graph_model, graph_opt, x, y)  # the first real step, as the replay makes it
    _step(eager_model, eager_opt, x, y)
    for a, b in zip(graph_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_capturable_optimizer_lr_is_a_tensor_the_schedule_updates_in_place():
    cfg = compose(["scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"])
    model = _model()
    optimizer = build_optimizer(cfg.optimizer, model, capturable=True)
    lr = optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    scheduler = build_scheduler(cfg.scheduler, optimizer, 3)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] is lr  # the same tensor, so a captured graph sees it
    assert current_lr(optimizer) == pytest.approx(0.005, rel=1e-6)
    plain = build_optimizer(cfg.optimizer, copy.deepcopy(model))
    assert isinstance(plain.param_groups[0]["lr"], float)
    # one arithmetic for both (the fused kernel): with the foreach step under capture, a 2-epoch
    # run with cuda_graphs drifted from the eager run by 4e-4 in its loss on an H200
    assert optimizer.param_groups[0]["fused"] and plain.param_groups[0]["fused"]


def test_loading_a_saved_optimizer_keeps_this_runs_capture_settings():
    from dwn_train.optim import load_optimizer_state

    cfg = compose([])
    model = _model()
    eager = build_optimizer(cfg.optimizer, model)  # fused, float lr
    captured = build_optimizer(cfg.optimizer, copy.deepcopy(model), capturable=True)  # device-tensor lr
    eager.param_groups[0]["lr"] = 0.004
    load_optimizer_state(captured, eager.state_dict())
    group = captured.param_groups[0]
    assert group["capturable"] is True and group["fused"]
    assert isinstance(group["lr"], torch.Tensor) and float(group["lr"]) == pytest.approx(0.004)
    load_optimizer_state(eager, captured.state_dict())
    group = eager.param_groups[0]
    assert group["capturable"] is False and group["fused"] and isinstance(group["lr"], float)


def test_cuda_graphs_auto_captures_only_where_a_replay_can_run():
    from dwn_train.graphs import captures

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert captures("auto", cuda, "single", "adam") and captures("auto", cuda, "single", "adamw")
    assert not captures("auto", cpu, "single", "adam")
    assert not captures("auto", cuda, "ddp", "adam")
    assert not captures("auto", cuda, "single", "sgd")
    assert captures(True, cuda, "single", "adam") and not captures(False, cuda, "single", "adam")


class _Stream:
    def wait_stream(self, other):
        pass


def _cpu_stand_ins(monkeypatch, capture_error):
    """torch.cuda's stream and graph calls as GraphStep makes them, run on the CPU; the capture
    itself raises `capture_error` (what torch raises for a host read-back inside a capture)."""
    @contextlib.contextmanager
    def graph(_):
        raise capture_error
        yield

    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "set_stream", lambda s: None)


def test_a_step_that_cannot_be_captured_is_undone_then_trained_eagerly(monkeypatch):
    from dwn_train.graphs import GraphStep

    try:  # as torch raises it: ending the capture fails again, naming no cause
        try:
            raise RuntimeError("operation not permitted when stream is capturing")
        except RuntimeError:
            raise RuntimeError("operation failed due to a previous error during capture")
    except RuntimeError as chained:
        _cpu_stand_ins(monkeypatch, chained)
    x, y = (torch.rand(16, 20) > 0.5).float(), torch.randint(0, 5, (16,))
    model, reference = _model(), _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    eager_calls = []

    one_step = eager_step(model, opt, _objective, set_to_none=False)

    def eager(xb, yb, scale):
        eager_calls.append(len(xb))
        return one_step(xb, yb, scale)

    messages = []
    step = GraphStep(model, opt, _objective, eager, batch_size=16, fallback=messages.append)
    for _ in range(2):
        step(x, y, 1.0)
        _step(reference, ref_opt, x, y)
    assert len(messages) == 1 and "could not be captured" in messages[0]
    assert "RuntimeError: operation not permitted when stream is capturing" in messages[0]
    assert eager_calls == [16, 16] and step.graph is None
    # the three warm-up steps were undone: two eager steps, as the reference took
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    strict = GraphStep(model, opt, _objective, eager, batch_size=16)
    with pytest.raises(DWNError, match=r"trainer.cuda_graphs=true: the training step could not be captured"):
        strict(x, y, 1.0)


def test_a_capture_that_fails_in_its_warm_up_undoes_the_steps_it_took(monkeypatch):
    from dwn_train.graphs import GraphStep

    _cpu_stand_ins(monkeypatch, AssertionError("the warm-up fails before the capture is reached"))
    x, y = (torch.rand(16, 20) > 0.5).float(), torch.randint(0, 5, (16,))
    inner, reference = _model(), _model()
    calls = []

    class FailsOnce(torch.nn.Module):  # the second forward (the second warm-up step) raises
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, xb):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("a host read-back in warm-up step 2")
            return self.inner(xb)

    model = FailsOnce()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.05)

    def eager(xb, yb, scale):
        _step(model, opt, xb, yb)
        return None, None

    messages = []
    GraphStep(model, opt, _objective, eager, batch_size=16, fallback=messages.append)(x, y, 1.0)
    _step(reference, ref_opt, x, y)
    assert "warm-up step 2" in messages[0]
    # warm-up step 1 moved the weights and Adam's moments and count: undone, so the one eager step
    # is a first step, the reference's
    for a, b in zip(inner.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory"), DWNError("a model's own fault")])
def test_out_of_memory_and_our_own_errors_are_not_taken_for_a_failed_capture(monkeypatch, error):
    from dwn_train.graphs import GraphStep

    _cpu_stand_ins(monkeypatch, error)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    messages = []
    step = GraphStep(model, opt, _objective, lambda *a: None, batch_size=16, fallback=messages.append)
    with pytest.raises(type(error), match=str(error)):
        step((torch.rand(16, 20) > 0.5).float(), torch.randint(0, 5, (16,)), 1.0)
    assert messages == []


def test_the_cuda_graphs_decision_is_made_once_for_validation_and_trainer():
    """graphs.captures is what the config check and the trainer both ask: true is refused where no
    capture can run, and allowed wherever auto would capture (device=auto on a GPU included, which
    the config check once refused); bools (as older checkpoints store it) and strings alike."""
    from dwn_train.graphs import captures

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    for setting in ("true", True, "True"):
        assert captures(setting, cuda, "single", "adamw")
        for device, strategy, kind in ((cpu, "single", "adam"), (cuda, "ddp", "adam"), (cuda, "single", "sgd")):
            with pytest.raises(DWNError, match="trainer.cuda_graphs=true needs a CUDA device"):
                captures(setting, device, strategy, kind)
    assert not captures("false", cuda, "single", "adam") and not captures(False, cuda, "single", "adam")
    for word in ("maybe", "AUTO", "FALSE", None):  # Hydra reads TRUE/False as bools; a string must be a word
        with pytest.raises(DWNError, match=f"must be auto, true or false; got {word!r}"):
            captures(word, cpu, "single", "adam")


def test_the_eager_step_trains_one_step_and_keeps_grad_tensors_on_request():
    from dwn_train.graphs import eager_step

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = (torch.rand(16, 20) > 0.5).float(), torch.randint(0, 5, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    loss, logits = eager_step(model, opt, _objective, set_to_none=False)(x, y, 0.5)
    assert logits.shape == (16, 5)
    assert loss.item() == pytest.approx(0.5 * torch.nn.functional.cross_entropy(logits.detach(), y).item())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    grads = [p.grad for p in model.parameters()]
    eager_step(model, opt, _objective, set_to_none=False)(x, y, 0.5)
    assert all(a is b for a, b in zip(grads, (p.grad for p in model.parameters())))  # the same tensors, zeroed
