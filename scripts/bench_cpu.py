"""CPU training throughput of the MNIST recipe model: our layers against a naive EFD baseline.

    python scripts/bench_cpu.py [--batches 32 256] [--steps 5] [--naive-steps 2] [--threads 2]

It also times the learnable mapping's wiring (the argmax over dim 0 of its (2352, 12000) weights,
once per training step): torch's max(dim=0).indices against mapping.column_argmax.

Model: 2352 random binary inputs -> LUTLayer(2000, n=6, mapping='learnable') -> LUTLayer(1000, n=6)
-> GroupSum(10, tau=1/0.3), Adam lr 1e-2 (fused), cross-entropy. Both rows run the same model and
optimizer; the baseline replaces only the LUT backward by the obvious per-sample scan over all 2^n
table entries for every input bit (vectorised in torch, chunked over the batch). Prints samples/s
and the ratio against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import dwn_train as dwn
from dwn_train.graphs import eager_step
from dwn_train.mapping import column_argmax


class NaiveLUTFunction(torch.autograd.Function):
    """Baseline: dx[i, map[j, l]] += g[i, j] * sum over all k of the EFD weight, per sample."""

    @staticmethod
    def forward(ctx, x, luts, mapping, alpha, beta):
        n = luts.shape[1].bit_length() - 1
        columns = torch.arange(x.shape[1]).view(-1, n) if mapping is None else mapping
        addr = ((x[:, columns] > 0).long() << torch.arange(n)).sum(-1)  # (B, N)
        ctx.save_for_backward(x, luts, mapping, addr)
        ctx.alpha, ctx.beta = alpha, beta
        return (luts.gather(1, addr.t()).t() > 0).float()

    @staticmethod
    def backward(ctx, grad):
        x, luts, mapping, addr = ctx.saved_tensors
        num, size = luts.shape
        n = size.bit_length() - 1
        k = torch.arange(size)
        bit = torch.arange(n)
        sign = ((k[None, :] >> bit[:, None]) & 1) * 2 - 1  # (n, 2^n)
        grad_luts = torch.zeros_like(luts).view(-1)
        grad_luts.index_add_(0, (addr + torch.arange(num) * size).view(-1), grad.reshape(-1))
        grad_x = torch.zeros_like(x)
        for start in range(0, x.shape[0], 8):  # chunked: (8, N, n, 2^n) at a time
            a = addr[start:start + 8]
            diff = (a[:, :, None, None] ^ k) & ~(1 << bit)[:, None]  # (b, N, n, 2^n)
            hamming = torch.zeros_like(diff)
            for m in range(n):
                hamming += (diff >> m) & 1
            weight = ctx.alpha * ctx.beta ** hamming.float() * sign
            per_bit = (weight * luts[None, :, None, :]).sum(-1)  # (b, N, n)
            contrib = per_bit * grad[start:start + 8, :, None]
            rows = grad_x[start:start + 8]
            if mapping is None:
                rows += contrib.reshape(rows.shape)
            else:
                rows.index_add_(1, mapping.reshape(-1), contrib.reshape(rows.shape[0], -1))
        return grad_x, grad_luts.view_as(luts), None, None, None


class NaiveLUTLayer(nn.Module):
    """Wraps one of our LUTLayers (same parameters) but runs the naive backward."""

    def __init__(self, layer: dwn.LUTLayer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        layer = self.layer
        with torch.no_grad():
            layer.luts.clamp_(-1, 1)
        mapping = None if layer.learnable else layer.mapping
        inputs = layer.mapping(x) if layer.learnable else x
        return NaiveLUTFunction.apply(inputs, layer.luts, mapping, layer.alpha, layer.beta)


def recipe_model(naive: bool) -> nn.Module:
    torch.manual_seed(0)
    first = dwn.LUTLayer(2352, 2000, n=6, mapping="learnable")
    second = dwn.LUTLayer(2000, 1000, n=6)
    if naive:
        first, second = NaiveLUTLayer(first), NaiveLUTLayer(second)
    return nn.Sequential(first, second, dwn.GroupSum(10, tau=1 / 0.3))


def samples_per_second(model: nn.Module, batch: int, steps: int, warmup: int = 1) -> float:
    torch.manual_seed(1)
    x = (torch.rand(batch, 2352) > 0.5).float()
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    step = eager_step(model, optimizer, lambda logits, labels, scale: nn.functional.cross_entropy(logits, labels))

    for _ in range(warmup):
        step(x, y, 1.0)
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y, 1.0)
    return batch * steps / (time.perf_counter() - start)


def argmax_milliseconds(function, weights: torch.Tensor, repeats: int = 5) -> float:
    function(weights)
    start = time.perf_counter()
    for _ in range(repeats):
        function(weights)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, default=8, help="timed steps for our layers")
    parser.add_argument("--naive-steps", type=int, default=1, help="timed steps for the baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'batch':>6} {'naive samples/s':>16} {'ours samples/s':>15} {'ratio':>7}")
    for batch in args.batches:
        naive = samples_per_second(recipe_model(True), batch, args.naive_steps)
        ours = samples_per_second(recipe_model(False), batch, args.steps, warmup=2)
        print(f"{batch:>6} {naive:>16.1f} {ours:>15.1f} {ours / naive:>6.1f}x", flush=True)
    weights = torch.rand(2352, 2000 * 6)
    baseline = argmax_milliseconds(lambda w: w.max(dim=0).indices, weights)
    blocked = argmax_milliseconds(column_argmax, weights)
    print(f"wiring argmax (2352 x 12000): torch max(dim=0) {baseline:.1f} ms, column_argmax {blocked:.1f} ms, "
          f"{baseline / blocked:.1f}x")


if __name__ == "__main__":
    main()
