"""GPU throughput: the MNIST recipe per epoch (eager and CUDA-graph captured) and the LUT kernels.

    python scripts/bench_gpu.py [--samples 60000] [--batches 32 1024]

Synthetic data of MNIST's shape (2352 thermometer bits, 10 classes). Rows: our torch backend, our
CUDA kernels (eager and one captured training step replayed), and torch-dwn 1.1.1 when it is
importable (not required). Prints seconds per epoch and ratios against torch-dwn (or our torch
backend), all measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

import dwn_train as dwn


def recipe(backend: str, lib=dwn):
    torch.manual_seed(0)
    model = torch.nn.Sequential(lib.LUTLayer(2352, 2000, n=6, mapping="learnable"), lib.LUTLayer(2000, 1000, n=6),
                                lib.GroupSum(10, tau=1 / 0.3)).cuda()
    for m in model.modules():
        if isinstance(m, dwn.LUTLayer):
            m.backend = backend
    return model


def epoch_seconds(model, x, y, batch: int, graph: bool) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, capturable=graph)
    steps = len(x) // batch
    static_x, static_y = x[:batch].clone(), y[:batch].clone()

    def step():
        optimizer.zero_grad(set_to_none=not graph)
        torch.nn.functional.cross_entropy(model(static_x), static_y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    replay = step
    if graph:
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            step()
        replay = captured.replay
    torch.cuda.synchronize()
    start = time.perf_counter()
    for s in range(steps):
        static_x.copy_(x[s * batch:(s + 1) * batch])
        static_y.copy_(y[s * batch:(s + 1) * batch])
        replay()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def kernel_ms(layer, x, grad, repeats: int = 20):
    def forward():
        return layer(x)

    def backward():
        layer(x.requires_grad_(True)).backward(grad)

    times = []
    for fn in (forward, backward):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / repeats * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 1024])
    args = parser.parse_args()
    try:
        import torch_dwn
    except ImportError:
        torch_dwn = None
    x = (torch.rand(args.samples, 2352, device="cuda") > 0.5).float()
    y = torch.randint(0, 10, (args.samples,), device="cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"torch-dwn {'present' if torch_dwn else 'not importable'}")
    print(f"{'batch':>6} {'variant':<24} {'s/epoch':>9} {'vs baseline':>12}")
    for batch in args.batches:
        rows = [("ours, torch backend", epoch_seconds(recipe("torch"), x, y, batch, False)),
                ("ours, CUDA kernels", epoch_seconds(recipe("cuda"), x, y, batch, False))]
        try:
            rows.append(("ours, kernels + graph", epoch_seconds(recipe("cuda"), x, y, batch, True)))
        except RuntimeError as exc:
            print(f"  graph capture failed: {exc}")
        if torch_dwn is not None:
            rows.insert(0, ("torch-dwn 1.1.1", epoch_seconds(recipe("torch", torch_dwn), x, y, batch, False)))
        base = rows[0][1]
        for name, seconds in rows:
            print(f"{batch:>6} {name:<24} {seconds:>9.2f} {base / seconds:>11.1f}x")
    bits = (torch.rand(4096, 2000, device="cuda") > 0.5).float()
    grad = torch.randn(4096, 1000, device="cuda")
    print("\nLUTLayer(2000, 1000, n=6), batch 4096: forward / forward+backward ms")
    candidates = [("ours, torch backend", "torch", dwn), ("ours, CUDA kernels", "cuda", dwn)]
    if torch_dwn is not None:
        candidates.insert(0, ("torch-dwn 1.1.1", "torch", torch_dwn))
    for name, backend, lib in candidates:
        torch.manual_seed(0)
        layer = lib.LUTLayer(2000, 1000, n=6).cuda()
        if isinstance(layer, dwn.LUTLayer):
            layer.backend = backend
        fwd, bwd = kernel_ms(layer, bits.clone(), grad)
        print(f"  {name:<24} {fwd:8.3f} {bwd:8.3f}")


if __name__ == "__main__":
    main()
