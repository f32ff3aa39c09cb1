"""The CUDA kernels on a GPU, against the torch backend in float64 on the same GPU (skipped without
one). The torch backend is itself checked against the element-by-element oracle (tests/test_lut.py),
so every comparison here is with the formulas in dwn_train/lut.py, not with the kernels' own output.

    python -m pytest -q tests/test_gpu.py          (scripts/gpu_check.sh runs it on the device)

Tolerance: |float32 - float64| <= TOL x max(1, max |reference|). Gradients of learnable mapping
weights reach ~1000 here, and with lm_tau = 0.001 the softmax of the input gradient amplifies
float32 rounding: the torch backend's own float32 path lands up to 1e-5 of the scale from float64
(absolute 2-6e-4 for n >= 10 with the 'paper' variant). A wrong address bit, EFD term, sign, lost
chunk or missed sample is off by a sizeable fraction of the scale.
"""

import copy

import pytest
import torch

import dwn_train as dwn
from dwn_train import cuda_lut, kernels, torch_lut
from dwn_train.graphs import GraphStep, eager_step
from dwn_train.lut import EFD_VARIANTS, LUTSpec, lut_forward
from dwn_train.mapping import GradBuffer
from helpers.luts import assert_same_lut_results
from lut_cases import lut_case

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = "cuda"
TOL = 5e-5
TAU = 0.001  # the learnable mapping's softmax temperature (LUTLayer's default)


def _case(n, num, inputs, batch, mapping="random", seed=0, device=None):
    return lut_case(n, num, inputs, batch, mapping, seed, device or DEVICE)


def _run(backend, case, spec, dtype=torch.float32):
    """lut_forward as LUTLayer.forward calls it, then backward: (out, grad_x, grad_luts, grad_w)."""
    x = case["x"].to(dtype, copy=True).requires_grad_()
    luts = case["luts"].to(dtype, copy=True).requires_grad_()
    extra = {}
    if case["weights"] is not None:
        weights = case["weights"].to(dtype, copy=True).requires_grad_()
        extra = {"weights": weights, "learnable": (TAU, GradBuffer())}
    out = lut_forward(x, luts, case["mapping"], spec, backend=backend, **extra)
    out.backward(case["grad"].to(dtype))
    return out.detach(), x.grad, luts.grad, extra["weights"].grad if extra else None


def _compare(case, spec, tol=TOL):
    """The kernels (float32) against the torch backend (float64); returns the kernels' results."""
    got = _run(cuda_lut, case, spec)
    ref = _run(torch_lut, case, spec, torch.float64)
    assert_same_lut_results(got, ref, tol)
    return got


@pytest.mark.parametrize("efd", EFD_VARIANTS)
@pytest.mark.parametrize("n", range(1, kernels.MAX_KERNEL_N + 1))
@pytest.mark.parametrize("mapping", ["random", "learnable"])
def test_kernels_match_float64_reference(mapping, n, efd):
    spec = LUTSpec(n=n, efd=efd, alpha=0.5 * 0.75 ** (n - 1), beta=1 / 3)
    _compare(_case(n, 257, 301, 37, mapping, seed=n), spec)  # sizes no multiples of the block size


@pytest.mark.parametrize("n", [3, 10])
def test_without_ste(n):
    got = _compare(_case(n, 100, 64, 45, seed=n), LUTSpec(n=n, ste=False, efd="paper"))
    assert not set(got[0].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("n", [1, 4, 6, 9, 12])
def test_deterministic_mode_matches_reference_and_is_bit_identical(n):
    """One block per LUT sums its samples in a fixed order: right, and the same bits every run."""
    case = _case(n, 150, 200, 3000, seed=n)
    spec = LUTSpec(n=n, deterministic=True)
    first = _compare(case, spec)
    second = _run(cuda_lut, case, spec)
    assert all(torch.equal(a, b) for a, b in zip(first[:3], second[:3])), "two deterministic runs differ"


@pytest.mark.parametrize("n", [6, 13])
def test_deterministic_torch_backend_on_the_gpu_is_bit_identical(n):
    """The torch backend on CUDA (the fallback above the kernels' n, and float64): with
    deterministic=True its scatters give the same bits every run."""
    case = _case(n, 120, 150, 4000, seed=n)
    spec = LUTSpec(n=n, deterministic=True)
    runs = [_run(torch_lut, case, spec, dtype) for dtype in (torch.float32, torch.float32, torch.float64,
                                                             torch.float64)]
    for first, second in (runs[:2], runs[2:]):
        assert all(torch.equal(a, b) for a, b in zip(first[:3], second[:3])), "two deterministic runs differ"
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("chunk", [64, 1000])
@pytest.mark.parametrize("n", [1, 5, 8, 12])
def test_table_gradient_summed_over_several_chunks(monkeypatch, n, chunk):
    """Several blocks of samples add into one table (grid (N, ceil(B / CHUNK))), the last partial."""
    monkeypatch.setattr(cuda_lut, "CHUNK", chunk)
    _compare(_case(n, 40, 80, 2500, seed=chunk + n), LUTSpec(n=n))


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("mapping", ["random", "learnable"])
@pytest.mark.parametrize("batch", [0, 1, 65536])
def test_extreme_batches(batch, mapping, deterministic):
    got = _compare(_case(6, 500, 600, batch, mapping, seed=batch), LUTSpec(n=6, deterministic=deterministic))
    if batch == 0:
        assert got[0].shape == (0, 500) and not got[2].any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_dtypes_fall_back_to_torch_or_fail_clearly(monkeypatch, dtype):
    torch.manual_seed(0)
    layer = dwn.LUTLayer(50, 40, n=4).to(DEVICE, dtype)
    x = (torch.rand(16, 50, device=DEVICE) > 0.5).to(dtype)
    launches = []
    monkeypatch.setattr(kernels, "launch", lambda *args, **kw: launches.append(args[1]))
    layer.backend = "auto"
    out = layer(x.clone().requires_grad_())
    out.sum().backward()
    assert out.dtype == dtype and not launches, f"auto ran the kernels on {dtype}: {launches}"
    reference = copy.deepcopy(layer)
    reference.backend = "torch"
    assert torch.equal(out, reference(x))
    layer.backend = "cuda"
    with pytest.raises(dwn.DWNError, match="float32"):
        layer(x)


def test_n_above_the_kernel_limit_falls_back_to_torch_or_fails_clearly():
    layer = dwn.LUTLayer(40, 8, n=kernels.MAX_KERNEL_N + 1).to(DEVICE)
    x = torch.randn(5, 40, device=DEVICE)
    layer.backend = "auto"
    out = layer(x)
    reference = copy.deepcopy(layer)
    reference.backend = "torch"
    assert out.shape == (5, 8) and torch.equal(out, reference(x))
    layer.backend = "cuda"
    with pytest.raises(dwn.DWNError, match="exceeds the kernels' limit"):
        layer(x)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_tensors_on_a_device_that_is_not_current():
    assert torch.cuda.current_device() == 0
    for mapping in ("random", "learnable"):
        _compare(_case(6, 100, 120, 300, mapping, device="cuda:1"), LUTSpec(n=6))
    assert torch.cuda.current_device() == 0


def _recipe(seed=0, deterministic=False, backend="cuda"):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(dwn.LUTLayer(64, 120, n=6, mapping="learnable"), dwn.LUTLayer(120, 60, n=6),
                                dwn.GroupSum(10, tau=1 / 0.3)).to(DEVICE)
    for layer in model[:2]:
        layer.backend, layer.deterministic = backend, deterministic
    return model


def _objective(logits, labels, scale):
    return torch.nn.functional.cross_entropy(logits, labels, reduction="sum") * scale


def test_training_step_is_capturable_in_a_cuda_graph():
    model, eager = _recipe(), _recipe()
    x = (torch.rand(32, 64, device=DEVICE) > 0.5).float()
    y = torch.randint(0, 10, (32,), device=DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True)
    opt_eager = torch.optim.Adam(eager.parameters(), lr=1e-2, capturable=True)
    step, step_eager = eager_step(model, opt, _objective, set_to_none=False), eager_step(eager, opt_eager, _objective, set_to_none=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm up: compile kernels, allocate buffers, build caches
            step(x, y, 1 / 32)
            step_eager(x, y, 1 / 32)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(x, y, 1 / 32)
    for _ in range(3):
        graph.replay()
        step_eager(x, y, 1 / 32)
    torch.cuda.synchronize()
    for a, b in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cuda", "torch"])
def test_graph_step_trains_like_the_eager_step(backend):
    """dwn_train.graphs.GraphStep: the warm-up is undone, so step k of the replay is step k of eager;
    a batch of another size takes the eager path. With the torch backend the deterministic scatters
    (torch's deterministic index_add_) are captured too."""
    model, eager = _recipe(deterministic=True, backend=backend), _recipe(deterministic=True, backend=backend)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True)
    opt_eager = torch.optim.Adam(eager.parameters(), lr=1e-2, capturable=True)
    graphed = GraphStep(model, opt, _objective, eager_step(model, opt, _objective, set_to_none=False), batch_size=32)
    step_eager = eager_step(eager, opt_eager, _objective, set_to_none=False)
    gen = torch.Generator().manual_seed(1)
    for size in (32, 32, 32, 20, 32):
        x = (torch.rand(size, 64, generator=gen) > 0.5).float().to(DEVICE)
        y = torch.randint(0, 10, (size,), generator=gen).to(DEVICE)
        loss, logits = graphed(x, y, 1 / size)
        loss_eager, logits_eager = step_eager(x, y, 1 / size)
        torch.testing.assert_close(loss, loss_eager, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits, logits_eager, rtol=1e-5, atol=1e-5)
    assert graphed.graph is not None
    for a, b in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class _Syncing(torch.nn.Module):
    """A model that reads a value back to the host in its forward: no CUDA graph can hold that."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.sum().item() < 0:  # never true: the read-back is the point
            x = -x
        return self.inner(x)


def test_a_step_that_cannot_be_captured_trains_eagerly_after_one_message():
    model, eager = _Syncing(_recipe()), _Syncing(_recipe())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=True)
    opt_eager = torch.optim.Adam(eager.parameters(), lr=1e-2, capturable=True)
    messages = []
    graphed = GraphStep(model, opt, _objective, eager_step(model, opt, _objective, set_to_none=False), batch_size=32, fallback=messages.append)
    step_eager = eager_step(eager, opt_eager, _objective, set_to_none=False)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = (torch.rand(32, 64, generator=gen) > 0.5).float().to(DEVICE)
        y = torch.randint(0, 10, (32,), generator=gen).to(DEVICE)
        loss, _ = graphed(x, y, 1 / 32)
        loss_eager, _ = step_eager(x, y, 1 / 32)
        torch.testing.assert_close(loss, loss_eager, rtol=1e-5, atol=1e-5)
    assert graphed.graph is None and len(messages) == 1 and "could not be captured" in messages[0]
    for a, b in zip(model.parameters(), eager.parameters()):  # the failed attempt trained nothing
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(dwn.DWNError, match="cuda_graphs=true"):
        strict = _Syncing(_recipe())
        opt_strict = torch.optim.Adam(strict.parameters(), lr=1e-2, capturable=True)
        GraphStep(strict, opt_strict, _objective, eager_step(strict, opt_strict, _objective, set_to_none=False), batch_size=32)(x, y, 1 / 32)


def test_trainer_cuda_graphs_matches_eager(compose_cfg, tmp_path, monkeypatch):
    from helpers.runs import SMALL, metric_rows
    from dwn_train.train import train

    base = [*SMALL, "trainer.device=cuda", "trainer.epochs=2", "trainer.batch_size=64", "trainer.deterministic=true",
            "trainer.checkpoint.save_best=false"]
    train(compose_cfg(base + ["trainer.cuda_graphs=false"]), tmp_path / "eager")
    captured, capture = [], GraphStep._capture
    monkeypatch.setattr(GraphStep, "_capture",
                        lambda self, *args: (capture(self, *args), captured.append(self.graph is not None)))
    train(compose_cfg(base), tmp_path / "graph")  # the default, auto: captured on a GPU (fused Adam)
    assert captured == [True]  # one capture, and it held: no eager fallback compared with eager
    eager, graph = metric_rows(tmp_path / "eager"), metric_rows(tmp_path / "graph")
    assert len(eager) == len(graph) == 2
    # the same optimizer arithmetic (fused Adam) and deterministic kernels: the replayed steps are the
    # eager ones, so the runs agree to rounding (with foreach Adam under capture they drifted by 4e-4)
    keys = ("train_loss", "train_acc", "test_acc")
    seen = f"eager {[[a[k] for k in keys] for a in eager]}, graph {[[b[k] for k in keys] for b in graph]}"
    for a, b in zip(eager, graph):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5), seen
        assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-3), seen
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-3), seen
