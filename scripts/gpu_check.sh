#!/usr/bin/env bash
# One prepared GPU check: the GPU tests, then the GPU benchmark, on a machine with a CUDA device.
#   bash scripts/gpu_check.sh            (needs: pip install -e ".[cuda,dev]")
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python -c "import torch, cupy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cupy', cupy.__version__)"
python -m pytest -q -m gpu tests/test_gpu.py tests/test_kernels.py
tests=$?
python scripts/bench_gpu.py
bench=$?
echo "gpu tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
