"""trainer.cuda_graphs on the CPU side: the warm-up is undone in place, and capturable optimizers
keep a learning rate that the schedule moves (the capture itself needs a GPU: tests/test_gpu.py)."""

import copy

import pytest
import torch

import dwn_train as dwn
from dwn_train.graphs import restore_in_place, snapshot
from dwn_train.optim import build_optimizer, build_scheduler, current_lr
from conftest import compose


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(dwn.LUTLayer(20, 30, n=3, mapping="learnable"), dwn.LUTLayer(30, 10, n=2),
                               dwn.GroupSum(5))


def _step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=False)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


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
