#!/usr/bin/env bash
# Make gpu_payload/ (git-ignored), what scripts/gpu_check.sh needs on a device machine that has no
# network, no Hydra and maybe no torchvision. Run here, where pip reaches the package index:
#   bash scripts/make_gpu_payload.sh [--check-baseline]
# Layout (about 20 MB; it travels as one `carry` path, within the device tool's 64 MiB):
#   wheels/    hydra-core 1.3.2, omegaconf 2.3.0 and antlr4-python3-runtime 4.9.3 (omegaconf 2.3 needs
#              antlr 4.9.x, which PyPI has only as an sdist: built here into a py3-none-any wheel)
#   fallback/  what the device image is said to have, each installed only where its import fails:
#              torchvision 0.26.0 (built for torch 2.11, CUDA 13, Python 3.12), PyYAML and packaging
#              (what OmegaConf and Hydra import)
#   sdist/     torch-dwn 1.1.1, the benchmark baseline, built on the device with its nvcc; and the
#              antlr4 sdist the wheel was built from
#   datasets/MNIST/raw/*.gz   torchvision reads the unpacked idx files: gpu_check.sh unpacks them
# --check-baseline: also compile torch-dwn's CUDA sources with this machine's nvcc for sm_90 (a
# compile check only: linking needs a CUDA runtime; takes a few minutes on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=gpu_payload
MNIST=${MNIST_RAW:-../shared/datasets/MNIST/raw}
rm -rf "$DIR"
mkdir -p "$DIR/wheels" "$DIR/fallback" "$DIR/sdist" "$DIR/datasets/MNIST/raw"
PIP=(python -m pip)

"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$DIR/wheels" \
    hydra-core==1.3.2 omegaconf==2.3.0
"${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation -d "$DIR/sdist" \
    antlr4-python3-runtime==4.9.3 torch-dwn==1.1.1
"${PIP[@]}" wheel -q --no-deps --no-build-isolation --no-index -w "$DIR/wheels" \
    "$DIR"/sdist/antlr4-python3-runtime-4.9.3.tar.gz
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$DIR/fallback" \
    torchvision==0.26.0 PyYAML==6.0.2 packaging==24.2
cp "$MNIST"/*-ubyte.gz "$DIR/datasets/MNIST/raw/"

for wheel in "$DIR"/wheels/*.whl; do  # pure Python: they install on any Python 3
    case "$wheel" in *-py3-none-any.whl|*-py2.py3-none-any.whl) ;; *) echo "not pure Python: $wheel" >&2; exit 1 ;; esac
done

if [ "${1:-}" = "--check-baseline" ]; then
    src=$(mktemp -d)
    tar xzf "$DIR"/sdist/torch_dwn-1.1.1.tar.gz -C "$src"
    cuda="$src/torch_dwn-1.1.1/src/torch_dwn/custom_operators/cuda"
    includes=$(python -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths('cuda')))" 2>/dev/null)
    pyinc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    flags=(-std=c++20 $includes -I"$pyinc" -DTORCH_EXTENSION_NAME=efd_cuda -w)
    for file in "$cuda"/*.cu; do
        echo "nvcc: $(basename "$file") for sm_90"
        nvcc -c -arch=sm_90 -Xcompiler -fPIC "${flags[@]}" -o "$src/kernel.o" "$file"
    done
    for file in "$cuda"/*.cpp; do
        echo "g++: $(basename "$file")"
        g++ -c -fPIC "${flags[@]}" -o "$src/binding.o" "$file"
    done
    rm -rf "$src"
    echo "torch-dwn's sources compile with $(nvcc --version | tail -1)"
fi
find "$DIR" -type f | sort | xargs ls -l | awk '{print $5, $9}'
du -sh "$DIR"
