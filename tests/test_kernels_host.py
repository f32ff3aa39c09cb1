"""The real kernels/lut.cu, executed on the CPU (tests/kernel_host.py) through dwn_train.cuda_lut,
against the torch backend in float64: forward exactly, gradients of tables, inputs and learnable
mapping weights to float32 rounding. The host runs 256 threads per block on a few cores, so each
__syncthreads costs about half a millisecond (more on a busy machine): large tables are tested
with few LUTs, and most of the tables of 2^8 and more entries only under the `slow` mark."""

import numpy as np
import pytest
import torch

import dwn_train as dwn
from dwn_train import cuda_lut, kernels, torch_lut
from dwn_train.lut import EFD_VARIANTS, LUTSpec, lut_forward
from dwn_train.mapping import GradBuffer
from helpers.luts import assert_near, assert_same_lut_results
from kernel_host import HostKernels, host_kernels, host_launch  # noqa: F401  (fixtures)
from lut_cases import lut_case as _case

def _run(backend, case, spec, dtype, need_x=True):
    """lut_forward as LUTLayer.forward calls it, then backward: (out, grad_x, grad_luts, grad_w)."""
    x = case["x"].to(dtype, copy=True).requires_grad_(need_x)
    luts = case["luts"].to(dtype, copy=True).requires_grad_()
    extra = {}
    if case["weights"] is not None:
        weights = case["weights"].to(dtype, copy=True).requires_grad_()
        extra = {"weights": weights, "learnable": (0.5, GradBuffer())}
    out = lut_forward(x, luts, case["mapping"], spec, backend=backend, **extra)
    out.backward(case["grad"].to(dtype))
    grad_w = extra["weights"].grad if extra else None
    return out.detach(), x.grad, luts.grad, grad_w


def _compare(case, spec, need_x=True, tol=2e-6):
    """Host kernels (float32) against torch (float64); returns the kernels' results."""
    got = _run(cuda_lut, case, spec, torch.float32, need_x)
    ref = _run(torch_lut, case, spec, torch.float64, need_x)
    assert_same_lut_results(got, ref, tol)
    return got


def _quick_or_slow(values, quick):
    """Parameters (single values or tuples), those not in `quick` marked slow."""
    return [pytest.param(*(v if isinstance(v, tuple) else (v,)), marks=() if v in quick else pytest.mark.slow)
            for v in values]


@pytest.mark.parametrize("n, efd", _quick_or_slow([(n, efd) for n in range(1, 13) for efd in EFD_VARIANTS],
                                                  [(n, efd) for n in (1, 3) for efd in EFD_VARIANTS]
                                                  + [(12, "exponential")]))
def test_kernels_match_torch(host_launch, n, efd):
    num = 6 if n <= 8 else 2
    _compare(_case(n, num, inputs=2 * n + 3, batch=45, seed=n), LUTSpec(n=n, efd=efd))


@pytest.mark.parametrize("n", _quick_or_slow((1, 2, 5, 9, 12), (2, 9)))
def test_learnable_mapping(host_launch, n):
    num = 5 if n <= 8 else 2
    got = _compare(_case(n, num, inputs=2 * n + 5, batch=45, mapping="learnable", seed=n), LUTSpec(n=n))
    assert got[3] is not None


@pytest.mark.parametrize("efd", EFD_VARIANTS)
@pytest.mark.parametrize("n", _quick_or_slow((2, 3, 6, 10), (3,)))
def test_repeated_inputs(host_launch, n, efd):
    num = 5 if n <= 8 else 2
    _compare(_case(n, num, inputs=n + 2, batch=45, mapping="repeated", seed=n), LUTSpec(n=n, efd=efd))


@pytest.mark.parametrize("n, batch, efd", [(2, 45, "fd"), pytest.param(4, 300, "paper", marks=pytest.mark.slow)])
def test_odd_sizes(host_launch, n, batch, efd):
    """N, I, B no multiples of 256; B * N and I * B span several partly filled blocks."""
    _compare(_case(n, 37, inputs=53, batch=batch, seed=batch), LUTSpec(n=n, efd=efd))


@pytest.mark.parametrize("n", _quick_or_slow((1, 4, 7, 8, 9, 12), (4, 8, 9)))
def test_deterministic_table_gradient(host_launch, n):
    """Every branch of the tiling (2^n below, at and above blockDim), several tiles with a partial
    last one: matches torch, equals the atomic kernel to rounding, and two runs are bit-identical."""
    case = _case(n, 3, inputs=n + 3, batch=600, seed=n)
    spec = LUTSpec(n=n, deterministic=True)
    first = _compare(case, spec, need_x=False, tol=1e-5)
    second = _run(cuda_lut, case, spec, torch.float32, need_x=False)
    assert torch.equal(first[2], second[2]), "two deterministic runs differ"
    atomic = _run(cuda_lut, case, spec.with_(deterministic=False), torch.float32, need_x=False)
    assert_near(atomic[2], first[2].double(), "atomic against deterministic", 1e-5)


def test_deterministic_gradients_end_to_end(host_launch):
    case = _case(5, 9, inputs=14, batch=70, seed=5)
    spec = LUTSpec(n=5, efd="fd", deterministic=True)
    first = _compare(case, spec)
    second = _run(cuda_lut, case, spec, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(first[:3], second[:3])), "two deterministic runs differ"


@pytest.mark.parametrize("chunk", [7, 16, 45])
@pytest.mark.parametrize("n", [2, 9])
def test_table_gradient_in_several_chunks(host_launch, monkeypatch, chunk, n):
    """Several blocks of samples add into one table (grid (N, ceil(B / CHUNK)))."""
    monkeypatch.setattr(cuda_lut, "CHUNK", chunk)
    _compare(_case(n, 3, inputs=n + 4, batch=45, seed=chunk), LUTSpec(n=n), need_x=False, tol=1e-5)


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("batch", [0, 1])
def test_batch_0_and_1(host_launch, batch, deterministic):
    _compare(_case(3, 4, inputs=7, batch=batch, seed=batch), LUTSpec(n=3, deterministic=deterministic))


def test_learnable_mapping_batch_1(host_launch):
    _compare(_case(3, 4, inputs=7, batch=1, mapping="learnable"), LUTSpec(n=3))


def test_learnable_mapping_batch_0(host_launch):
    _compare(_case(3, 4, inputs=7, batch=0, mapping="learnable"), LUTSpec(n=3))


@pytest.mark.parametrize("n", _quick_or_slow((3, 10), (3,)))
def test_without_ste(host_launch, n):
    """ste=False outputs the addressed entry itself."""
    got = _compare(_case(n, 4, inputs=n + 5, batch=45, seed=n), LUTSpec(n=n, ste=False, efd="paper"))
    assert not set(got[0].unique().tolist()) <= {0.0, 1.0}


def test_layers_run_on_the_host_kernels(host_launch, monkeypatch):
    """LUTLayer.forward's own path (cached inverse mapping, learnable wiring) with the CUDA backend,
    against the same layer on the torch backend."""
    choose = lambda spec, x, luts: torch_lut if spec.backend == "torch" else cuda_lut  # noqa: E731
    monkeypatch.setattr("dwn_train.layers.select_backend", choose)
    monkeypatch.setattr("dwn_train.lut.select_backend", choose)
    torch.manual_seed(0)
    for mapping in ("random", "learnable"):
        fast = dwn.LUTLayer(20, 4, n=3, mapping=mapping, efd="fd")
        ref = dwn.LUTLayer(20, 4, n=3, mapping=mapping, efd="fd")
        ref.load_state_dict(fast.state_dict())
        ref.backend = "torch"
        x = torch.randn(33, 20)
        grad = torch.randn(33, 4)
        for call in range(3):  # the second call reuses the layer's inverse mapping; the third has new wiring
            if call == 2 and mapping == "random":  # loaded in place: the cached inverse must be refreshed
                state = fast.state_dict()
                state["mapping"] = torch.randperm(20)[:12].view(4, 3).to(state["mapping"].dtype)
                fast.load_state_dict(state), ref.load_state_dict(state)
            xs = [x.clone().requires_grad_() for _ in range(2)]
            outs = [layer(v) for layer, v in zip((fast, ref), xs)]
            assert torch.equal(outs[0], outs[1])
            for out in outs:
                out.backward(grad)
            torch.testing.assert_close(xs[0].grad, xs[1].grad)
            torch.testing.assert_close(fast.luts.grad, ref.luts.grad)
            if mapping == "learnable":
                torch.testing.assert_close(fast.mapping.weights.grad, ref.mapping.weights.grad)
            fast.zero_grad(), ref.zero_grad()


# The host launcher checks each launch; these show that it catches the mistakes it is there for.

def _table_gradient_args(n=3, num=2, batch=10):
    grad = torch.rand(num, batch) + 0.5
    addr = (torch.arange(num * batch) % 2**n).view(num, batch).to(torch.int16)  # every entry is hit
    return grad, addr, torch.zeros(num, 2**n), np.int32(batch), np.int32(num), np.int32(n), np.int32(batch)


def test_host_launch_runs_a_kernel_directly(host_launch):
    grad, addr, out, *sizes = _table_gradient_args()
    host_launch("lut", "lut_backward_luts_f32", (2, 1), (grad, addr, out, *sizes), shared=4 * 8)
    expected = torch.zeros(2, 8).scatter_add_(1, addr.long(), grad)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("change, message", [
    (lambda a: {"args": a["args"][:-1]}, "takes 7 arguments"),
    (lambda a: {"args": (a["args"][0].double(), *a["args"][1:])}, "expected dtype torch.float32"),
    (lambda a: {"args": (a["args"][0], a["args"][1].long(), *a["args"][2:])}, "expected dtype torch.int16"),
    (lambda a: {"args": (a["args"][0].t().contiguous().t(), *a["args"][1:])}, "not contiguous"),
    (lambda a: {"args": (*a["args"][:3], 10, *a["args"][4:])}, "expected int32; got int"),
    (lambda a: {"args": (*a["args"][:3], np.int64(10), *a["args"][4:])}, "expected int32; got int64"),
    (lambda a: {"args": (*a["args"][:2], a["args"][0], *a["args"][3:])}, "shares memory"),
    (lambda a: {"grid": (2, 1, 1)}, "1 or 2 dimensions"),
    (lambda a: {"grid": (0,)}, "must be positive"),
    (lambda a: {"threads": 2048}, "threads must be in 1..1024"),
    (lambda a: {"shared": 64 * 1024}, "shared memory must be in"),
    (lambda a: {"shared": 4 * 8 - 4}, "wrote shared memory byte 28, past the 28 bytes"),
    (lambda a: {"args": (a["args"][0], a["args"][1], torch.zeros(2, 7), *a["args"][3:])}, "wrote past the end"),
])
def test_host_launch_rejects_bad_launches(host_launch, change, message):
    launch = {"grid": (2, 1), "args": _table_gradient_args(), "shared": 4 * 8, "threads": 256}
    launch.update(change(launch))
    with pytest.raises(AssertionError, match=message):
        host_launch("lut", "lut_backward_luts_f32", launch["grid"], launch["args"], launch["shared"],
                    launch["threads"])


BAD_CU = r"""
extern "C" __global__ void divergent_sync(float* x)  // x (1,)
{
    if (threadIdx.x < 3) {
        __syncthreads();
    }
    x[0] = 1.0f;
}

extern "C" __global__ void unwritten_shared(float* x)  // x (blockDim,)
{
    DWN_SHARED(float, smem);
    x[threadIdx.x] = smem[threadIdx.x];
}
"""


@pytest.mark.slow  # builds its own library
def test_shim_reports_divergent_syncthreads(monkeypatch, tmp_path, host_kernels):
    """A __syncthreads that not every thread reaches is an error; shared memory starts as NaN."""
    (tmp_path / "bad.cu").write_text(BAD_CU)
    monkeypatch.setattr(kernels, "kernels_dir", lambda: tmp_path)
    host = HostKernels(tmp_path)
    with pytest.raises(AssertionError, match="called __syncthreads 1 times, thread 3 0 times"):
        host.launch("bad", "divergent_sync", (1,), (torch.zeros(1),), threads=32)
    x = torch.zeros(32)
    host.launch("bad", "unwritten_shared", (1,), (x,), shared=4 * 32, threads=32)
    assert x.isnan().all()
