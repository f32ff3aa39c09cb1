"""Inference throughput of the MNIST recipe model: float eval vs the packed engines vs exported C.

    python scripts/bench_inference.py [--root ../shared/datasets] [--checkpoint PATH] [--repeats 5]

Model: a trained checkpoint of the MNIST recipe (--checkpoint) or, without one, a freshly
initialised recipe model (2352 -> LUTLayer(2000, n=6, learnable) -> LUTLayer(1000, n=6) ->
GroupSum(10)); speed does not depend on the trained values. Data: MNIST's 10,000 test images from
--root (torchvision layout), or random bytes of the same shape. Every engine starts from the integer
pixels (encoding included: int64 for torch and numpy, the uint8 codes of the I/O contract for the
compiled engine and the exported C) and all must give identical classes. Each engine's time is the
best of --repeats runs after one warm-up run (the machine may be shared); prints samples/s and the
ratio against the float eval, measured in the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dwn_train as dwn
from dwn_train.export import c as c_export
from dwn_train.export import cbuild, compiled
from dwn_train.export.freeze import InputFormat, freeze
from dwn_train.export.packed import predict_packed
from dwn_train.export.simplify import program


def load_images(root: str | None):
    if root:
        import torchvision

        train = torchvision.datasets.MNIST(root, train=True, download=False)
        test = torchvision.datasets.MNIST(root, train=False, download=False)
        return train.data.flatten(1).float(), test.data.flatten(1).numpy().astype(np.int64)
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (60000, 784)).astype(np.float32)), rng.integers(0, 256, (10000, 784))


def recipe(checkpoint: str | None, x_train):
    if checkpoint:
        from dwn_train.checkpoint import restore

        restored = restore(checkpoint)
        return restored.model, restored.encoder
    torch.manual_seed(0)
    encoder = dwn.DistributiveThermometer(3).fit(x_train)
    model = torch.nn.Sequential(dwn.LUTLayer(2352, 2000, n=6, mapping="learnable"), dwn.LUTLayer(2000, 1000, n=6),
                                dwn.GroupSum(10, tau=1 / 0.3))
    return model.eval(), encoder


def timed(fn, repeats: int):
    """(fn's result, the best of `repeats` timed calls after a warm-up call, in seconds)"""
    result, best = fn(), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def compile_c(net, workdir: Path):
    c_export.write(net, workdir)
    library = workdir / "libdwn.so"
    subprocess.run(["gcc", "-std=c99", "-O3", "-march=native", "-shared", "-fPIC", "-o", str(library),
                    str(workdir / "dwn_model.c")], check=True)
    lib = ctypes.CDLL(str(library))
    lib.dwn_predict_batch.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
    return lib


def compiled_rows(net, q8, repeats: int) -> list:
    """(name, seconds, classes) of the compiled engine on one thread and on every core."""
    start = time.perf_counter()
    compiled.library(net)  # built now or found in the cache
    ready, prog = time.perf_counter() - start, program(net)
    print(f"compiled engine ready in {ready:.2f} s (cache: {cbuild.cache_dir()}); after simplification "
          f"{len(prog.luts)} LUTs and {len(prog.blocks)} encoder blocks of 64 comparators")
    rows = []
    for threads in (1, compiled.default_threads()):
        (classes, _), seconds = timed(lambda: compiled.predict(net, q8, threads=threads, scores=False), repeats)
        rows.append((f"compiled packed, {threads} thread{'s' * (threads > 1)}", seconds, classes))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder with MNIST/raw (torchvision layout)")
    parser.add_argument("--checkpoint", default=None, help="a dwn-train checkpoint of the MNIST recipe")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4096, help="float eval batch size")
    args = parser.parse_args()
    x_train, q = load_images(args.root)
    model, encoder = recipe(args.checkpoint, x_train)
    net = freeze(model, encoder, InputFormat(8, 0, False))
    count, q8 = len(q), np.ascontiguousarray(q, dtype=np.uint8)

    def float_eval():
        x = torch.from_numpy(q).float()
        with torch.no_grad():
            return torch.cat([model(encoder.binarize(x[s:s + args.batch_size]).flatten(1)).argmax(-1)
                              for s in range(0, count, args.batch_size)]).numpy()

    float_classes, float_s = timed(float_eval, args.repeats)
    (packed_classes, _), packed_s = timed(lambda: predict_packed(net, q), args.repeats)
    rows = [("float eval (torch)", float_s, float_classes),
            ("packed engine (numpy, 64/word)", packed_s, packed_classes)]
    rows += compiled_rows(net, q8, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        lib = compile_c(net, Path(tmp))
        out = np.zeros(count, dtype=np.int32)
        _, c_s = timed(lambda: lib.dwn_predict_batch(q8.ctypes.data, count, out.ctypes.data), args.repeats)
        rows.append(("exported C batch (gcc -O3 -march=native)", c_s, out))
    for name, _, classes in rows:
        assert np.array_equal(classes, float_classes), f"{name} disagrees with the float eval"
    print(f"MNIST recipe model, {count} test images ({'real' if args.root else 'random'} data), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; identical classes from all engines")
    print(f"{'engine':<42} {'samples/s':>12} {'vs float':>9}")
    for name, seconds, _ in rows:
        print(f"{name:<42} {count / seconds:>12,.0f} {float_s / seconds:>8.1f}x")


if __name__ == "__main__":
    main()
