"""The CUDA kernels against the torch implementation on a GPU (skipped without one).

Run on a GPU machine with the cuda extra installed:  python -m pytest -q -m gpu tests/test_gpu.py
"""

import copy
import json

import pytest
import torch

import dwn_train as dwn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _pair(mapping, n, efd, inputs, outputs):
    torch.manual_seed(0)
    ref = dwn.LUTLayer(inputs, outputs, n=n, mapping=mapping, efd=efd).cuda()
    fast = dwn.LUTLayer(inputs, outputs, n=n, mapping=mapping, efd=efd).cuda()
    fast.load_state_dict(ref.state_dict())
    ref.backend, fast.backend = "torch", "cuda"
    return ref, fast


def _run(layer, x, grad):
    x = x.clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    out = layer(x)
    out.backward(grad)
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    return out.detach(), grads


@pytest.mark.parametrize("efd", dwn.EFD_VARIANTS)
@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("mapping", ["random", "learnable"])
def test_kernels_match_torch(mapping, n, efd):
    inputs, outputs, batch = 301, 257, 37  # not multiples of the block size
    ref, fast = _pair(mapping, n, efd, inputs, outputs)
    x = torch.randn(batch, inputs, device="cuda")
    grad = torch.randn(batch, outputs, device="cuda")
    out_ref, grads_ref = _run(ref, x, grad)
    out_fast, grads_fast = _run(fast, x, grad)
    assert torch.equal(out_ref, out_fast)
    for a, b in zip(grads_ref, grads_fast):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 65536])
def test_extreme_batches(batch):
    ref, fast = _pair("random", 6, "exponential", 600, 500)
    x = torch.randn(batch, 600, device="cuda")
    grad = torch.randn(batch, 500, device="cuda")
    out_ref, grads_ref = _run(ref, x, grad)
    out_fast, grads_fast = _run(fast, x, grad)
    assert torch.equal(out_ref, out_fast)
    for a, b in zip(grads_ref, grads_fast):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)


def test_deterministic_backward_is_bit_identical():
    _, fast = _pair("random", 6, "exponential", 400, 300)
    fast.deterministic = True
    x = torch.randn(4096, 400, device="cuda")
    grad = torch.randn(4096, 300, device="cuda")
    first = _run(fast, x, grad)[1]
    second = _run(fast, x, grad)[1]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_training_step_is_capturable_in_a_cuda_graph():
    torch.manual_seed(0)
    model = torch.nn.Sequential(dwn.LUTLayer(64, 120, n=6, mapping="learnable"), dwn.LUTLayer(120, 60, n=6),
                                dwn.GroupSum(10)).cuda()
    for layer in model[:2]:
        layer.backend = "cuda"
    eager = copy.deepcopy(model)
    x = (torch.rand(32, 64, device="cuda") > 0.5).float()
    y = torch.randint(0, 10, (32,), device="cuda")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True)
    opt_eager = torch.optim.Adam(eager.parameters(), lr=1e-2, capturable=True)

    def step(net, optimizer):
        optimizer.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up: compile kernels, allocate buffers, build caches
            step(model, opt)
            step(eager, opt_eager)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(model, opt)
    graph.replay()
    step(eager, opt_eager)
    torch.cuda.synchronize()
    for a, b in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_trainer_cuda_graphs_matches_eager(compose_cfg, tmp_path):
    from conftest import SMALL
    from dwn_train.train import train

    base = [*SMALL, "trainer.device=cuda", "trainer.epochs=2", "trainer.batch_size=64"]
    train(compose_cfg(base), tmp_path / "eager")
    train(compose_cfg(base + ["trainer.cuda_graphs=true"]), tmp_path / "graph")
    read = lambda p: [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(read(tmp_path / "eager"), read(tmp_path / "graph")):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.01)
