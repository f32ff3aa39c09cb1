"""CUDA kernels without a GPU: every .cu compiles through NVRTC as CuPy would, and the per-element
device functions, compiled for the host with g++, agree with the torch implementation."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import dwn_train as dwn
from dwn_train import kernels
from dwn_train.lut import derivative_table, efd_terms, lut_addresses
from dwn_train.resources import kernels_dir

HARNESS = Path(__file__).parent / "harness" / "lut_host.cpp"
VARIANTS = {"exponential": 0, "paper": 1, "fd": 2}


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("name", [p.stem for p in sorted(kernels_dir().glob("*.cu"))])
def test_kernel_compiles_with_nvrtc(name, arch):
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    program = nvrtc.createProgram(kernels.source(name), f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, list(kernels.compile_options(arch)))
    except Exception as exc:  # the log names the .cu file and line, thanks to the #line directive
        pytest.fail(f"{name}.cu does not compile for {arch}:\n{nvrtc.getProgramLog(program)}\n{exc}")
    assert b".entry" in nvrtc.getPTX(program) or ".entry" in str(nvrtc.getPTX(program))


def test_kernel_entry_points_have_shape_comments():
    for path in kernels_dir().glob("*.cu"):
        text = path.read_text()
        for signature in text.split('extern "C" __global__')[1:]:
            params = signature[signature.index("(") + 1:signature.index(")")]
            for line in params.splitlines():
                if "*" in line:
                    assert "//" in line and "(" in line.split("//")[1], f"{path.name}: {line.strip()}"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    binary = tmp_path_factory.mktemp("harness") / "lut_host"
    subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{kernels_dir()}", "-o", str(binary),
                    str(HARNESS)], check=True)
    return binary


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8])
def test_device_functions_match_torch_on_the_host(harness, n, variant):
    torch.manual_seed(n)
    num, batch, inputs = 4, 5, 9
    x = torch.randn(batch, inputs)
    x[0, :4] = 0.0  # zero is a 0 bit
    mapping = torch.randint(0, inputs, (num, n))
    luts = torch.rand(num, 2**n) * 2 - 1
    alpha, beta = 0.5 * 0.75 ** (n - 1), 1 / 3
    numbers = [n, num, batch, inputs, VARIANTS[variant], alpha, beta]
    text = " ".join(map(str, numbers)) + "\n" + " ".join(f"{v:.9g}" for v in x.view(-1).tolist()) + "\n"
    text += " ".join(map(str, mapping.view(-1).tolist())) + "\n" + " ".join(f"{v:.9g}" for v in luts.view(-1).tolist())
    out = subprocess.run([str(harness)], input=text, capture_output=True, text=True, check=True).stdout.splitlines()
    addresses = np.array(out[0].split(), dtype=np.int64).reshape(batch, num)
    table = np.array(out[1].split(), dtype=np.float64).reshape(num, n, 2**n)
    assert np.array_equal(addresses, lut_addresses(x, mapping).t().numpy())
    expected = derivative_table(luts.double(), efd_terms(variant, n, alpha, beta)).numpy()
    np.testing.assert_allclose(table, expected, rtol=1e-5, atol=1e-5)


def test_backend_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    layer = dwn.LUTLayer(4, 2, n=2)
    layer.backend = "cuda"
    with pytest.raises(dwn.DWNError, match="backend='cuda' cannot run"):
        layer(torch.randn(3, 4))
    layer.backend = "auto"  # falls back to torch on CPU tensors
    assert layer(torch.randn(3, 4)).shape == (3, 2)


def test_compile_errors_point_at_the_cu_file(monkeypatch, tmp_path):
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    broken = tmp_path / "broken.cu"
    broken.write_text('#include "common.cuh"\nextern "C" __global__ void k(float* x) { x[0] = undefined_name; }\n')
    shutil.copy(kernels_dir() / "common.cuh", tmp_path / "common.cuh")
    monkeypatch.setattr(kernels, "kernels_dir", lambda: tmp_path)
    program = nvrtc.createProgram(kernels.source("broken"), "broken.cu", [], [])
    with pytest.raises(Exception):
        nvrtc.compileProgram(program, list(kernels.compile_options("compute_80")))
    assert f"{broken}(2)" in nvrtc.getProgramLog(program)
