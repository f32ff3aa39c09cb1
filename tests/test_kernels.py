"""CUDA kernels without a GPU: every .cu compiles through NVRTC as CuPy would, errors name the real
file and line, and the text CuPy compiles (and hashes for its cache) includes the headers.
Executing the kernels on the CPU against the torch backend: tests/test_kernels_host.py."""

import shutil

import pytest
import torch

import dwn_train as dwn
from dwn_train import kernels
from dwn_train.resources import kernels_dir


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("name", [p.stem for p in sorted(kernels_dir().glob("*.cu"))])
def test_kernel_compiles_with_nvrtc(name, arch):
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    program = nvrtc.createProgram(kernels.source(name), f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, list(kernels.compile_options(arch)))
    except Exception as exc:  # the log names the .cu file and line, thanks to the #line directives
        pytest.fail(f"{name}.cu does not compile for {arch}:\n{nvrtc.getProgramLog(program)}\n{exc}")
    assert ".entry" in str(nvrtc.getPTX(program))


def test_kernel_entry_points_have_shape_comments():
    for path in kernels_dir().glob("*.cu"):
        text = path.read_text()
        for signature in text.split('extern "C" __global__')[1:]:
            params = signature[signature.index("(") + 1:signature.index(")")]
            for line in params.splitlines():
                if "*" in line:
                    assert "//" in line and "(" in line.split("//")[1], f"{path.name}: {line.strip()}"


def test_backend_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    layer = dwn.LUTLayer(4, 2, n=2)
    layer.backend = "cuda"
    with pytest.raises(dwn.DWNError, match="backend='cuda' cannot run"):
        layer(torch.randn(3, 4))
    layer.backend = "auto"  # falls back to torch on CPU tensors
    x = torch.randn(3, 4)
    out = layer(x)
    layer.backend = "torch"
    assert out.shape == (3, 2) and torch.equal(out, layer(x))


@pytest.fixture
def kernel_copy(monkeypatch, tmp_path):
    """A copy of kernels/ that kernels.source reads instead of the real one."""
    copy = tmp_path / "kernels"
    shutil.copytree(kernels_dir(), copy)
    monkeypatch.setattr(kernels, "kernels_dir", lambda: copy)
    return copy


@pytest.mark.parametrize("broken_file", ["broken.cu", "common.cuh"])
def test_compile_errors_point_at_the_file_and_line(kernel_copy, broken_file):
    """source() inlines the headers; its #line directives make NVRTC name the file that is wrong."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    header = kernel_copy / "common.cuh"
    text = '#include "common.cuh"\nextern "C" __global__ void k(float* x) { x[0] = dwn_probe(); }\n'
    header_lines = header.read_text().splitlines()
    if broken_file == "broken.cu":
        header.write_text("\n".join(header_lines + ["DWN_HD inline float dwn_probe() { return 1.0f; }", ""]))
        text = text.replace("dwn_probe()", "undefined_name")
    else:
        header.write_text("\n".join(header_lines + ["DWN_HD inline float dwn_probe() { return undefined_name; }", ""]))
    (kernel_copy / "broken.cu").write_text(text)
    source = kernels.source("broken")
    assert '#include "common.cuh"' not in source
    program = nvrtc.createProgram(source, "broken.cu", [], [])
    with pytest.raises(Exception):
        nvrtc.compileProgram(program, list(kernels.compile_options("compute_80")))
    line = 2 if broken_file == "broken.cu" else len(header_lines) + 1
    log = nvrtc.getProgramLog(program)
    assert f"{kernel_copy / broken_file}({line})" in log, log


def test_a_header_change_changes_the_source(kernel_copy):
    """CuPy's kernel cache key is a hash of the source text: editing common.cuh alone must change it."""
    before = kernels.source("lut")
    header = kernel_copy / "common.cuh"
    header.write_text(header.read_text().replace("address |=", "address  |="))
    after = kernels.source("lut")
    assert before != after and "address  |=" in after
    assert after.count(f'#line 1 "{header}"') == 1


def test_kernels_that_do_not_load_mean_torch_not_a_traceback(monkeypatch):
    """A CuPy for another CUDA, or an NVRTC failure: available(device) is False, with one warning."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernels, "_cupy", lambda: object())
    kernels._loads.cache_clear()

    def broken(name, device):
        raise RuntimeError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the provided PTX was compiled with an unsupported toolchain")

    monkeypatch.setattr(kernels, "_module", broken)
    with pytest.warns(UserWarning, match="could not be loaded on cuda:0 .*UNSUPPORTED_PTX"):
        assert kernels.available(torch.device("cuda", 0)) is False
    assert kernels.available(torch.device("cuda", 0)) is False  # remembered: no second warning
    assert kernels.available() is True  # CuPy itself imports
    kernels._loads.cache_clear()
