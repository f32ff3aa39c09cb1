#!/usr/bin/env bash
# The one prepared GPU check (issues 11 and 16), run from anywhere on a bare device machine:
#   bash scripts/gpu_check.sh OUTDIR
# It needs no network: gpu_payload/ (made here by scripts/make_gpu_payload.sh, git-ignored) brings
# what the device image lacks. Steps, each timed, every log in OUTDIR, exit statuses summed up at
# the end (OUTDIR/summary.txt):
#   env       GPU, driver, python, torch, CuPy, nvcc
#   deps      the payload's wheels (Hydra, OmegaConf, antlr4; PyYAML, packaging, torchvision only where
#             they are missing)
#             into a --target folder on PYTHONPATH; the project is imported from this checkout
#   data      MNIST's idx files unpacked from the payload (torchvision reads them unpacked), loaded once
#   baseline  torch-dwn 1.1.1 built from its sdist with this machine's nvcc, in the background while
#             the tests run; without it the benchmark's ratios are against our torch backend
#   tests     pytest tests/test_gpu.py tests/test_kernels.py tests/test_kernels_host.py (not slow)
#   bench     scripts/bench_gpu.py -> bench.log (the table), bench.json (every row)
#   train     the MNIST recipe through dwn_train.cli (hydra.run.dir=OUTDIR/mnist), cut when the time
#             budget runs out; per-epoch test accuracy and seconds -> mnist_epochs.txt
# Without a CUDA device the CUDA steps are skipped with a message, and the rest runs: a dry run.
# Exit status: 1 if the tests or the deps failed, else 0.
# Environment: DWN_GPU_BUDGET  seconds for the whole script (default 450; training gets what is left)
#              DWN_GPU_SKIP    steps to leave out, e.g. "baseline train" for a quick rerun
#              DWN_TRAIN_ARGS  extra overrides for the training (default none: trainer.cuda_graphs=auto
#                              captures the step on the GPU)
#              DWN_GPU_PAYLOAD the payload folder (default gpu_payload), PYTHON (default python3)
set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
if [ $# -ne 1 ]; then
    echo "usage: bash scripts/gpu_check.sh OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" && OUTDIR=$(cd "$1" && pwd) || exit 2
START=$SECONDS
BUDGET=${DWN_GPU_BUDGET:-450}
SKIP=" ${DWN_GPU_SKIP:-} "
PAYLOAD=${DWN_GPU_PAYLOAD:-gpu_payload}
[[ "$PAYLOAD" = /* ]] || PAYLOAD=$REPO/$PAYLOAD
PY=${PYTHON:-$(command -v python3 || command -v python)}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/dwn_gpu_check.XXXXXX")
SITE=$SCRATCH/site BASELINE=$SCRATCH/baseline DATA=$SCRATCH/datasets
BUILD_PID=""
cleanup() {
    if [ -n "$BUILD_PID" ]; then kill "$BUILD_PID" 2>/dev/null; fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PY SITE PAYLOAD DATA
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"

STEPS=() RESULTS=() TIMES=()
record() {  # record NAME RESULT SECONDS
    STEPS+=("$1") RESULTS+=("$2") TIMES+=("$3")
    echo "== $1: $2 (${3} s)"
}
skip() {  # skip NAME REASON
    echo "$2: skipping $1"
    record "$1" "skipped: $2" 0
}
wanted() { [[ "$SKIP" != *" $1 "* ]] || { skip "$1" "DWN_GPU_SKIP"; return 1; }; }
run() {  # run NAME LIMIT COMMAND...: COMMAND (a program or a function here) under `timeout`, its
    local name=$1 limit=$2 t0=$SECONDS rc  # output also in OUTDIR/NAME.log
    shift 2
    echo "== $name (at most $limit s)"
    if declare -F "$1" >/dev/null; then  # a function runs in a child bash, so that timeout can stop it
        set -- bash -c "$(declare -f "$1"); $*"
    fi
    timeout --kill-after=20 "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
    rc=$?
    case $rc in
        0) record "$name" "ok" $((SECONDS - t0)) ;;
        124|137) record "$name" "TIMEOUT after $limit s (exit $rc)" $((SECONDS - t0)) ;;
        *) record "$name" "FAILED (exit $rc)" $((SECONDS - t0)) ;;
    esac
    return $rc
}
left() { echo $((BUDGET - (SECONDS - START))); }

# --- env ---------------------------------------------------------------------------------------
t0=$SECONDS
{
    echo "repository $REPO, python $PY, payload $PAYLOAD, budget $BUDGET s"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1
    else
        echo "no nvidia-smi"
    fi
    if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
    if command -v nvcc >/dev/null; then nvcc --version | tail -1; else echo "no nvcc"; fi
    "$PY" - <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| torch CUDA", torch.version.cuda,
      "| devices", torch.cuda.device_count(), "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")
try:
    import cupy
    print("cupy", cupy.__version__)
except Exception as exc:
    print("cupy not importable:", exc)
EOF
} 2>&1 | tee "$OUTDIR/env.log"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>/dev/null || echo 9.0)
record env "ok (CUDA device: $([ "$CUDA" = 1 ] && echo yes || echo no))" $((SECONDS - t0))

# --- deps --------------------------------------------------------------------------------------
install_deps() {
    set -e
    "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" \
        "$PAYLOAD"/wheels/*.whl
    local module project
    for module in yaml:PyYAML packaging:packaging torchvision:torchvision; do  # the image should have these
        project=${module#*:} module=${module%:*}
        if ! "$PY" -c "import $module" 2>/dev/null; then
            echo "$project missing: installing the payload's"
            "$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$SITE" \
                --find-links "$PAYLOAD/fallback" "$project" || echo "WARNING: $project could not be installed"
        fi
    done
    "$PY" - "$SITE" <<'EOF'
import importlib, sys
site = sys.argv[1]
for name in ("hydra", "omegaconf", "antlr4", "dwn_train", "dwn_train.cli", "torchvision"):
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        if name != "torchvision":
            raise
        print(f"WARNING: torchvision does not import ({exc})")
        continue
    where = "the payload" if module.__file__.startswith(site) else module.__file__.rsplit("/", 2)[0]
    print(f"{name:14} {getattr(module, '__version__', ''):14} from {where}")
EOF
}
run deps 120 install_deps
DEPS=$?

# --- data --------------------------------------------------------------------------------------
unpack_mnist() {
    set -e
    mkdir -p "$DATA/MNIST/raw"
    "$PY" - "$PAYLOAD/datasets/MNIST/raw" "$DATA/MNIST/raw" <<'EOF'
import gzip, pathlib, shutil, sys
source, target = map(pathlib.Path, sys.argv[1:])
files = sorted(source.glob("*-ubyte.gz"))
assert len(files) == 4, f"expected 4 MNIST .gz files in {source}, found {len(files)}"
for f in files:
    with gzip.open(f) as src, open(target / f.stem, "wb") as dst:
        shutil.copyfileobj(src, dst)
from omegaconf import OmegaConf
from dwn_train.data import load_dataset
splits = load_dataset(OmegaConf.create({"kind": "mnist", "root": str(target.parent.parent), "download": False}))
print(f"MNIST: train {tuple(splits.x_train.shape)}, test {tuple(splits.x_test.shape)}, {splits.num_classes} classes")
EOF
}
wanted data && run data 60 unpack_mnist

# --- baseline (background) ---------------------------------------------------------------------
build_baseline() {  # runs in the background; writes its exit status and seconds into SCRATCH
    local t0=$SECONDS rc
    TORCH_CUDA_ARCH_LIST=$ARCH MAX_JOBS=8 timeout 240 "$PY" -m pip install --no-index --no-deps \
        --no-build-isolation --no-cache-dir --disable-pip-version-check --target "$BASELINE" \
        "$PAYLOAD"/sdist/torch_dwn-1.1.1.tar.gz > "$OUTDIR/baseline.log" 2>&1
    rc=$?
    if [ $rc = 0 ]; then
        PYTHONPATH="$BASELINE:$PYTHONPATH" "$PY" -c "import torch_dwn, efd_cuda; print('torch_dwn imports')" \
            >> "$OUTDIR/baseline.log" 2>&1 || rc=3
    fi
    echo "$rc $((SECONDS - t0))" > "$SCRATCH/baseline.status"
}
if wanted baseline; then
    if [ "$CUDA" != 1 ]; then
        skip baseline "no CUDA device"
    elif ! command -v nvcc >/dev/null; then
        skip baseline "no nvcc"
    else
        echo "== baseline: building torch-dwn 1.1.1 for sm_${ARCH/./} in the background (log: baseline.log)"
        build_baseline &
        BUILD_PID=$!
    fi
fi

# --- tests -------------------------------------------------------------------------------------
TESTS=(tests/test_gpu.py tests/test_kernels.py)
[ -f tests/test_kernels_host.py ] && TESTS+=(tests/test_kernels_host.py)
if wanted tests; then
    [ "$CUDA" = 1 ] || echo "no CUDA device: tests/test_gpu.py will skip; the NVRTC and host-kernel tests still run"
    run tests 240 "$PY" -m pytest -q -p no:cacheprovider -m "not slow" -rs --durations=8 "${TESTS[@]}"
    TESTS_RC=$?
else
    TESTS_RC=0
fi

if [ -n "$BUILD_PID" ]; then
    wait "$BUILD_PID"
    BUILD_PID=""
    rc=255 seconds=0
    [ -f "$SCRATCH/baseline.status" ] && read -r rc seconds < "$SCRATCH/baseline.status"
    if [ "$rc" = 0 ]; then
        record baseline "ok: torch-dwn built" "$seconds"
    else
        record baseline "FAILED (exit $rc; see baseline.log): benchmarking without torch-dwn" "$seconds"
        tail -5 "$OUTDIR/baseline.log"
    fi
fi

# --- bench -------------------------------------------------------------------------------------
if wanted bench; then
    if [ "$CUDA" = 1 ]; then
        limit=$(($(left) - 30)) && limit=$((limit > 240 ? 240 : limit < 60 ? 60 : limit))
        PYTHONPATH="$BASELINE:$PYTHONPATH" run bench "$limit" "$PY" scripts/bench_gpu.py --json "$OUTDIR/bench.json"
    else
        echo "no CUDA device: skipping the GPU benchmark; running its CPU smoke mode instead"
        run bench 120 "$PY" scripts/bench_gpu.py --smoke --json "$OUTDIR/bench.json"
    fi
fi

# --- train -------------------------------------------------------------------------------------
# resume=overwrite: a rerun into the same OUTDIR replaces the earlier try instead of being refused
TRAIN=(trainer.device=cuda "dataset.root=$DATA" "hydra.run.dir=$OUTDIR/mnist" trainer.checkpoint.save_best=false
       trainer.plot=false trainer.resume=overwrite ${DWN_TRAIN_ARGS:-})
epochs_table() {
    "$PY" - "$OUTDIR/mnist/metrics.jsonl" <<'EOF' | tee "$OUTDIR/mnist_epochs.txt"
import json, pathlib, sys
path = pathlib.Path(sys.argv[1])
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
print(f"MNIST recipe: {len(rows)} epoch(s) finished")
print(f"{'epoch':>5} {'train acc':>9} {'test acc':>9} {'seconds':>8} {'samples/s':>10}")
for r in rows:
    test = f"{100 * r['test_acc']:8.2f}%" if r.get("test_acc") is not None else f"{'-':>9}"
    print(f"{r['epoch']:>5} {100 * r['train_acc']:8.2f}% {test} {r['seconds']:8.2f} {r['samples_per_s']:10.0f}")
EOF
}
if wanted train; then
    if [ "$CUDA" != 1 ]; then
        echo "no CUDA device: skipping the MNIST training; checking that its command line composes"
        run train 60 "$PY" -m dwn_train.cli "${TRAIN[@]}" --cfg job \
            && RESULTS[-1]="skipped: no CUDA device (its command line composes)"
    elif [ "$(left)" -lt 60 ]; then
        skip train "under 60 s of the $BUDGET s budget left"
    else
        limit=$(($(left) - 15))
        run train "$limit" "$PY" -m dwn_train.cli "${TRAIN[@]}"
        [ $? = 124 ] && RESULTS[-1]="cut at the time budget ($limit s): see mnist_epochs.txt"
        epochs_table
    fi
fi

# --- summary -----------------------------------------------------------------------------------
{
    echo "gpu_check: $(uname -n), $((SECONDS - START)) s in all, budget $BUDGET s, logs in $OUTDIR"
    printf '%-9s %6s  %s\n' step seconds result
    for i in "${!STEPS[@]}"; do printf '%-9s %6s  %s\n' "${STEPS[$i]}" "${TIMES[$i]}" "${RESULTS[$i]}"; done
    if [ -f "$OUTDIR/bench.log" ]; then echo; sed -n '/^x = /,$p' "$OUTDIR/bench.log"; fi
    if [ -f "$OUTDIR/mnist_epochs.txt" ]; then echo; head -2 "$OUTDIR/mnist_epochs.txt"; tail -n +3 "$OUTDIR/mnist_epochs.txt" | tail -3; fi
} | tee "$OUTDIR/summary.txt"
[ "$DEPS" = 0 ] && [ "$TESTS_RC" = 0 ]
