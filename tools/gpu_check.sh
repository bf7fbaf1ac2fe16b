#!/usr/bin/env bash
# The GPU checks in one run, for a session that is lent a GPU machine (the device tool runs it
# in a copy of this checkout): the CUDA tests on the real GPU (tests/test_cuda_gpu.py) and the
# GPU figures (tools/gpu_bench.py). Everything lands in $OUT (default /tmp/gpu_check).
#
# That machine reaches no registry and has its own Python with numpy, numba, torch and
# transformers, but not gguf: carry its wheel. Once, here, from the repository root:
#   echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl gguf==0.19.0
# then run:  bash tools/gpu_check.sh   with carry [".whl"]   (about 6 minutes on an H200).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total \
      --format=csv; command -v nvcc || ls -d /usr/local/cuda*/bin 2>/dev/null; } \
    2>&1 | tee "$OUT/gpu.txt"

# The import package `ingot` maps its subpackages to the repository's folders (pyproject's
# package-dir): a folder of links gives the same layout without installing anything.
PKG=/tmp/ingot_pkg
rm -rf "$PKG" && mkdir -p "$PKG/ingot"
cp ingot/*.py "$PKG/ingot/"
for sub in compiler runtime arch quant targets; do ln -s "$PWD/$sub" "$PKG/ingot/$sub"; done
SITE="$PKG"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && SITE="$PKG:/tmp/site"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import ingot, numba, torch, transformers, gguf; print('imports ok', ingot.__file__)" \
    2>&1 | tee -a "$OUT/gpu.txt" || exit 1

# 1. The CUDA tests on the GPU (the simulator's CUDA tests need no GPU: CI runs them).
timeout 300 python3 -m pytest -q -p no:cacheprovider -n 8 --dist loadgroup \
    tests/test_cuda_gpu.py 2>&1 | tee "$OUT/tests.txt"
# 2. Figures: batch 1 (ingot bench), batch 8, greedy tokens GPU vs CPU.
timeout 420 python3 tools/gpu_bench.py --out "$OUT" 2>&1 | tee "$OUT/bench.txt"
