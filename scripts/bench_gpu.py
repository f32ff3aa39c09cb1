"""GPU benchmark: the MNIST recipe model, ours against torch-dwn 1.1.1, in one process on one card.

    python scripts/bench_gpu.py [--json FILE] [--batches 32 256 4096] [--epoch-samples 60000]
    python scripts/bench_gpu.py --smoke      # CPU, toy sizes, host clock: runs every row once (a typo check)

The model: 2352 bits -> LUTLayer(2000, n=6, learnable) -> LUTLayer(1000, n=6) -> GroupSum(10, tau=1/0.3),
on random bits of MNIST's width. Sections:
  model   per batch: forward, backward (of the cross-entropy), the whole training step (fused Adam lr 1e-2)
          and the peak memory of the row (torch.cuda.max_memory_allocated, reset before the row's
          model is built: parameters, Adam state and activations). Variants: torch-dwn, our CUDA
          kernels, our kernels with the step captured in a CUDA graph (dwn_train.graphs.GraphStep,
          as trainer.cuda_graphs=true; step only), our torch backend.
  efd     the backward of LUTLayer(2000, 1000, n=6) with a fixed mapping alone (EFD + STE).
  epoch   one pass over 60,000 samples at batch 32 (the recipe's epoch), host clock around it; no
          loss.item() per step (the trainer's own epoch seconds come from a real training run).
  profile where a training step's time goes, at the first batch size (the recipe's 32): torch.profiler
          over PROFILE_STEPS eager steps of torch-dwn and of our kernels; per step: the host's wall
          time, the time the GPU was busy, the number of kernel launches, and the kernels (or, on
          the CPU, the operators) that take the most time. Wall time well above busy time means
          the step waits on launches (what trainer.cuda_graphs removes). On a GPU also the host
          operators with the most own CPU time.
  profile_efd  the same for the EFD backward alone (efd's case) at the first and last batch sizes;
          `busy x` is torch-dwn's GPU-busy time over ours: the kernels against each other, without
          the host's launch costs.
  launch  (GPU only) host microseconds per call of one tiny kernel through dwn_train.kernels.launch,
          against one torch operator on a tensor as small: what each of our launches costs the host.
Times are medians of CUDA-event timings after warm-up. `x` is the baseline's time over the row's
(> 1: faster than the baseline); the baseline is torch-dwn measured in this run, or our torch
backend when torch-dwn is not importable. A row that fails prints its error; the rest still run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback

import numpy as np
import torch
from torch import nn

import dwn_train as dwn
from dwn_train.graphs import GraphStep, eager_step

WIDTH, HIDDEN, OUTPUTS, CLASSES, N = 2352, 2000, 1000, 10, 6
TORCH_DWN = "torch-dwn 1.1.1"
KERNELS, GRAPH, TORCH = "ours, CUDA kernels", "ours, kernels + graph", "ours, torch backend"
LAUNCH_OURS, LAUNCH_TORCH = "ours, kernels.launch", "torch operator (add_)"
LAUNCH_CALLS = 5000
KERNEL_BACKEND = ["cuda"]  # --smoke: "auto", so that the kernel rows run (on torch) on the CPU


def import_torch_dwn():
    """(module or None, a word on why not)."""
    try:
        import torch_dwn
    except Exception as exc:  # ImportError, or its extension failing to load
        return None, f"not importable ({type(exc).__name__}: {exc})"
    return torch_dwn, "present"


def set_backend(model, backend):
    for m in model.modules():
        if isinstance(m, dwn.LUTLayer):
            m.backend = backend
    return model


def recipe(variant, device, lib):
    torch.manual_seed(0)
    lib = lib if variant == TORCH_DWN else dwn
    model = nn.Sequential(lib.LUTLayer(WIDTH, HIDDEN, n=N, mapping="learnable"), lib.LUTLayer(HIDDEN, OUTPUTS, n=N),
                          lib.GroupSum(CLASSES, tau=1 / 0.3)).to(device)
    if variant != TORCH_DWN:
        set_backend(model, "torch" if variant == TORCH else KERNEL_BACKEND[0])
    return model.train()


def adam(model, capturable=False):
    """Adam as our trainer builds it (fused, also under CUDA graphs), for every variant: the step
    rows then differ in the layers, not in the optimizer (a torch-dwn user can pass fused=True too)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2, fused=True,
                            capturable=capturable)


def objective(logits, labels, scale):
    return nn.functional.cross_entropy(logits, labels, reduction="sum") * scale


class Timer:
    """Milliseconds of fn(setup()) per call, median over `iters` after `warmup` calls: CUDA events
    on a GPU, the host clock otherwise."""

    def __init__(self, device, warmup, iters):
        self.cuda, self.warmup, self.iters = device.type == "cuda", warmup, iters

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn, setup=lambda: None):
        for _ in range(self.warmup):
            fn(setup())
        marks = []  # (start, end): CUDA events, or host seconds
        for _ in range(self.iters):
            arg = setup()
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(arg)
                end.record()
            else:
                start = time.perf_counter()
                fn(arg)
                end = time.perf_counter()
            marks.append((start, end))
        self.sync()
        return statistics.median(s.elapsed_time(e) if self.cuda else (e - s) * 1e3 for s, e in marks)


def reset_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device):
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None


def model_row(variant, lib, batch, device, timer):
    """forward / backward / step ms and peak MiB of one variant at one batch size."""
    reset_memory(device)
    model = recipe(variant, device, lib)
    x = (torch.rand(batch, WIDTH, device=device) > 0.5).float()
    y = torch.randint(0, CLASSES, (batch,), device=device)
    row = {}
    if variant == GRAPH:
        optimizer = adam(model, capturable=True)
        eager = eager_step(model, optimizer, objective, set_to_none=False)
        step = GraphStep(model, optimizer, objective, eager, batch)
        row["step_ms"] = timer(lambda _: step(x, y, 1 / batch))
    else:
        optimizer = adam(model)
        row["forward_ms"] = timer(lambda _: model(x))

        def loss_to_differentiate():
            optimizer.zero_grad(set_to_none=True)
            return objective(model(x), y, 1 / batch)

        row["backward_ms"] = timer(lambda loss: loss.backward(), loss_to_differentiate)
        step = eager_step(model, optimizer, objective)
        row["step_ms"] = timer(lambda _: step(x, y, 1 / batch))
    row["peak_mib"] = peak_mib(device)
    return row


def efd_case(variant, lib, batch, device):
    """(out, grad, clear) of one fixed-mapping LUT layer, LUTLayer(2000, 1000, n=6): out.backward(grad)
    is the EFD backward alone; clear() drops the gradients it leaves."""
    torch.manual_seed(0)
    layer = (lib if variant == TORCH_DWN else dwn).LUTLayer(HIDDEN, OUTPUTS, n=N).to(device)
    if variant != TORCH_DWN:
        layer.backend = "torch" if variant == TORCH else KERNEL_BACKEND[0]
    x = (torch.rand(batch, HIDDEN, device=device) > 0.5).float().requires_grad_()
    grad = torch.randn(batch, OUTPUTS, device=device)

    def clear():
        x.grad = layer.luts.grad = None

    return layer(x), grad, clear


def efd_row(variant, lib, batch, device, timer):
    """The backward of one fixed-mapping LUT layer alone (efd_case)."""
    reset_memory(device)
    out, grad, clear = efd_case(variant, lib, batch, device)
    return {"backward_ms": timer(lambda _: out.backward(grad, retain_graph=True), clear), "peak_mib": peak_mib(device)}


def launch_row(variant, device, timer, calls=LAUNCH_CALLS):
    """Host microseconds per call of one tiny launch: ours through dwn_train.kernels.launch (the
    path every kernel of ours takes), or one torch operator; both on 1-row tensors."""
    from dwn_train import kernels
    from dwn_train.cuda_lut import _terms_tensor
    from dwn_train.lut import LUTSpec

    spec = LUTSpec(n=N)
    size = 1 << N
    luts = torch.randn(1, size, device=device)
    table = torch.empty(1, N, size, device=device)
    terms = _terms_tensor(spec.terms, device)
    args = (luts, terms, table, np.int32(1), np.int32(N), np.int32(len(spec.terms)))
    if variant == LAUNCH_OURS:
        call = lambda: kernels.launch("lut", "efd_table_f32", (1,), args, shared=8 * size)  # noqa: E731
    else:
        call = lambda: luts.add_(1.0)  # noqa: E731
    for _ in range(100):
        call()
    timer.sync()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    host_us = (time.perf_counter() - start) * 1e6 / calls
    timer.sync()
    return {"host_us": host_us}


def epoch_row(variant, lib, samples, batch, device, timer):
    """Seconds for one pass over `samples` random samples at `batch` (uint8 bits, as the trainer keeps them)."""
    reset_memory(device)
    model = recipe(variant, device, lib)
    bits = (torch.rand(samples, WIDTH, device=device) > 0.5).to(torch.uint8)
    labels = torch.randint(0, CLASSES, (samples,), device=device)
    if variant == GRAPH:
        optimizer = adam(model, capturable=True)
        eager = eager_step(model, optimizer, objective, set_to_none=False)
        step = GraphStep(model, optimizer, objective, eager, batch)
    else:
        step = eager_step(model, adam(model), objective)
    steps = samples // batch
    for s in range(min(3, steps)):  # warm up (and capture) outside the clock
        step(bits[s * batch:(s + 1) * batch].float(), labels[s * batch:(s + 1) * batch], 1 / batch)
    timer.sync()
    start = time.perf_counter()
    for s in range(steps):
        step(bits[s * batch:(s + 1) * batch].float(), labels[s * batch:(s + 1) * batch], 1 / batch)
    timer.sync()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples_per_s": steps * batch / seconds, "peak_mib": peak_mib(device)}


PROFILE_STEPS, PROFILE_TOP, PROFILE_HOST_TOP = 10, 12, 6


def _self_time(event, cuda):
    """An averaged profiler event's own time in microseconds (device time on a GPU)."""
    if not cuda:
        return event.self_cpu_time_total
    for name in ("self_device_time_total", "self_cuda_time_total"):  # the name changed in torch 2.4
        if hasattr(event, name):
            return getattr(event, name)
    return 0.0


def profile_row(kind, variant, lib, batch, device, steps=PROFILE_STEPS):
    """Where one eager call's time goes (see the module docstring): kind 'step' is the training
    step of the recipe model, 'efd' the backward of LUTLayer(2000, 1000, n=6) alone."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    reset_memory(device)
    if kind == "step":
        model = recipe(variant, device, lib)
        step = eager_step(model, adam(model), objective)
        x = (torch.rand(batch, WIDTH, device=device) > 0.5).float()
        y = torch.randint(0, CLASSES, (batch,), device=device)
        call = lambda: step(x, y, 1 / batch)  # noqa: E731
    else:
        out, grad, clear = efd_case(variant, lib, batch, device)
        call = lambda: (clear(), out.backward(grad, retain_graph=True))  # noqa: E731
    cuda = device.type == "cuda"
    for _ in range(3):
        call()
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            call()
        if cuda:
            torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    events = prof.key_averages()
    on_gpu = lambda e: getattr(e, "device_type", None) == DeviceType.CUDA  # noqa: E731
    per_call = lambda chosen, gpu: sorted(((_self_time(e, gpu) / 1e3 / steps, e.count / steps, e.key)  # noqa: E731
                                           for e in chosen), reverse=True)
    # host operators by own time (the top-level ones would count their children twice)
    host = per_call([e for e in events if not on_gpu(e) and not e.key.startswith("ProfilerStep")], False)
    # on a GPU the kernels themselves (CuPy's launches included: the profiler sees the whole context)
    timed = per_call([e for e in events if on_gpu(e)], True) if cuda else host
    busy_ms = sum(ms for ms, _, _ in timed)
    listed = lambda items: [{"name": name, "ms": ms, "calls": calls} for ms, calls, name in items]  # noqa: E731
    return {"wall_ms": wall_ms, "busy_ms": busy_ms, "kernels_per_step": sum(c for _, c, _ in timed) if cuda else None,
            "top": listed(timed[:PROFILE_TOP]), "host_top": listed(host[:PROFILE_HOST_TOP]) if cuda else []}


PROFILES = {"profile": "a training step", "profile_efd": "the EFD backward alone"}


def profile_table(rows) -> str:
    lines = []
    busy = {(r["section"], r["batch"], r["variant"]): r["busy_ms"] for r in rows if "busy_ms" in r}
    for r in rows:
        if r["section"] not in PROFILES:
            continue
        head = f"where {PROFILES[r['section']]}'s time goes: {r['variant']}, batch {r['batch']}"
        if "error" in r:
            lines += ["", f"{head}: ERROR {r['error'][:80]}"]
            continue
        what = "kernel" if r["kernels_per_step"] is not None else "operator (CPU, own time)"
        launches = f", {r['kernels_per_step']:.0f} kernel launches" if r["kernels_per_step"] is not None else ""
        theirs = busy.get((r["section"], r["batch"], TORCH_DWN))
        against = f"; busy x {theirs / r['busy_ms']:.2f} against {TORCH_DWN}" \
            if theirs and r["busy_ms"] and r["variant"] != TORCH_DWN else ""
        lines += ["", f"{head} (per call: wall {r['wall_ms']:.3f} ms, busy {r['busy_ms']:.3f} ms{launches}{against})",
                  f"{'ms':>9} {'%busy':>6} {'calls':>6}  {what}"]
        for top in r["top"]:
            share = 100 * top["ms"] / r["busy_ms"] if r["busy_ms"] else 0.0
            lines.append(f"{top['ms']:9.4f} {share:6.1f} {top['calls']:6.1f}  {top['name'][:90]}")
        if r.get("host_top"):
            lines.append(f"{'ms':>9} {'%wall':>6} {'calls':>6}  host operator (own CPU time)")
            for top in r["host_top"]:
                share = 100 * top["ms"] / r["wall_ms"] if r["wall_ms"] else 0.0
                lines.append(f"{top['ms']:9.4f} {share:6.1f} {top['calls']:6.1f}  {top['name'][:90]}")
    return "\n".join(lines)


def run_rows(section, variants, batches, measure, rows):
    for batch in batches:
        for variant in variants:
            try:
                result = measure(variant, batch)
            except Exception as exc:  # one failing row must not stop the others
                error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                print(f"  {section} batch {batch} {variant}: ERROR {error}", flush=True)
                traceback.print_exc(limit=3, file=sys.stdout)
                result = {"error": error}
            rows.append({"section": section, "batch": batch, "variant": variant, **result})
            print(f"  {section} batch {batch} {variant}: {format_result(result)}", flush=True)


def format_result(result):
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                     if k != "top")  # the profile's kernel list is printed by profile_table


def add_ratios(rows, baseline):
    """ratio_<metric> = the baseline's time / the row's time, same section and batch. Where the
    baseline's row failed, our torch backend's row stands in (`against` names the one used)."""
    ok = {(r["section"], r["batch"], r["variant"]): r for r in rows if "error" not in r}
    for r in rows:
        for against in (baseline, TORCH, LAUNCH_TORCH):
            ref = ok.get((r["section"], r["batch"], against))
            if ref is not None:
                break
        if ref is None or "error" in r:
            continue
        r["against"] = against
        for key in ("forward_ms", "backward_ms", "step_ms", "seconds", "host_us"):
            if r.get(key) and ref.get(key):
                r[f"ratio_{key}"] = ref[key] / r[key]


def cell(row, key, fmt):
    value = row.get(key)
    if not isinstance(value, (int, float)):
        return f"{'-':>{int(fmt.split('.')[0])}}"
    stand_in = key.startswith("ratio") and row.get("against") not in (None, row["baseline"], LAUNCH_TORCH)
    return format(value, fmt) + ("*" if stand_in else "")


# section -> (title, columns: (header, row key, format))
SECTIONS = {
    "model": ("model 2352 -> LUT(2000, n=6, learnable) -> LUT(1000, n=6) -> GroupSum(10): ms per call",
              (("fwd", "forward_ms", "8.3f"), ("bwd", "backward_ms", "8.3f"), ("step", "step_ms", "8.3f"),
               ("peak MiB", "peak_mib", "9.0f"), ("fwd x", "ratio_forward_ms", "7.2f"),
               ("bwd x", "ratio_backward_ms", "7.2f"), ("step x", "ratio_step_ms", "7.2f"))),
    "efd": ("EFD backward alone, LUTLayer(2000, 1000, n=6), fixed mapping: ms per call",
            (("bwd", "backward_ms", "8.3f"), ("peak MiB", "peak_mib", "9.0f"),
             ("bwd x", "ratio_backward_ms", "7.2f"))),
    "epoch": ("one epoch of the recipe (random bits), host clock",
              (("s/epoch", "seconds", "8.2f"), ("samples/s", "samples_per_s", "10.0f"),
               ("x", "ratio_seconds", "7.2f"))),
    "launch": (f"one tiny launch, host microseconds per call ({LAUNCH_CALLS} calls; x = the torch operator's / ours)",
               (("us/call", "host_us", "8.2f"), ("x", "ratio_host_us", "7.2f"))),
}


def table(rows, baseline) -> str:
    note = f"; x* = against {TORCH}, where the {baseline} row failed" if baseline != TORCH else ""
    lines = [f"x = {baseline} time / row time (> 1: faster than {baseline}){note}"]
    for section, (title, columns) in SECTIONS.items():
        if not any(r["section"] == section for r in rows):
            continue
        header = " ".join(f"{name:>{int(fmt.split('.')[0])}}" for name, _, fmt in columns)
        lines += ["", title, f"{'batch':>6} {'variant':<24} {header}"]
        for r in rows:
            if r["section"] != section:
                continue
            r = {**r, "baseline": baseline}
            cells = f"ERROR {r['error'][:80]}" if "error" in r else " ".join(cell(r, k, f) for _, k, f in columns)
            lines.append(f"{r['batch']:>6} {r['variant']:<24} {cells}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256, 4096])
    parser.add_argument("--epoch-samples", type=int, default=60000)
    parser.add_argument("--epoch-batch", type=int, default=32)
    parser.add_argument("--json", help="also write every row here")
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes: run every row once")
    args = parser.parse_args()
    if args.smoke:
        device, args.batches, args.epoch_samples, args.epoch_batch = torch.device("cpu"), [4], 16, 4
        KERNEL_BACKEND[0] = "auto"
        timers = {b: Timer(device, 1, 2) for b in args.batches}
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark (--smoke runs the rows on the CPU)")
        return 2
    else:
        device = torch.device("cuda")
        timers = {b: Timer(device, 3, 30 if b <= 256 else 10) for b in args.batches}
    torch_dwn, why = import_torch_dwn()
    baseline = TORCH_DWN if torch_dwn is not None else TORCH
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke)"
    print(f"{name}, torch {torch.__version__}, torch-dwn {why}; baseline: {baseline}", flush=True)
    if args.smoke:
        print("smoke run on the CPU: the kernel rows run our torch code ('auto'); the graph rows need CUDA and fail")
    variants = ([TORCH_DWN] if torch_dwn else []) + [KERNELS, GRAPH, TORCH]
    rows = []
    run_rows("model", variants, args.batches, lambda v, b: model_row(v, torch_dwn, b, device, timers[b]), rows)
    run_rows("efd", [v for v in variants if v != GRAPH], args.batches,
             lambda v, b: efd_row(v, torch_dwn, b, device, timers[b]), rows)
    epoch_variants = ([TORCH_DWN] if torch_dwn else [TORCH]) + [KERNELS, GRAPH]
    run_rows("epoch", epoch_variants, [args.epoch_batch],
             lambda v, b: epoch_row(v, torch_dwn, args.epoch_samples, b, device, Timer(device, 0, 0)), rows)
    if device.type == "cuda":
        run_rows("launch", [LAUNCH_TORCH, LAUNCH_OURS], [1], lambda v, b: launch_row(v, device, Timer(device, 0, 0)),
                 rows)
    profiled = ([TORCH_DWN] if torch_dwn else []) + [KERNELS]
    run_rows("profile", profiled, args.batches[:1], lambda v, b: profile_row("step", v, torch_dwn, b, device), rows)
    run_rows("profile_efd", profiled, sorted({args.batches[0], args.batches[-1]}),
             lambda v, b: profile_row("efd", v, torch_dwn, b, device), rows)
    add_ratios(rows, baseline)
    print()
    print(table(rows, baseline))
    print(profile_table(rows))
    if args.json:
        info = {"device": name, "torch": torch.__version__, "torch_dwn": why, "baseline": baseline,
                "epoch_samples": args.epoch_samples, "rows": rows}
        with open(args.json, "w") as handle:
            json.dump(info, handle, indent=1)
    return 1 if any("error" in r for r in rows if not (args.smoke and r["variant"] in (GRAPH, TORCH_DWN))) else 0


if __name__ == "__main__":
    sys.exit(main())
