#!/usr/bin/env bash
# Runs on the lent GPU machine from the repository root, with bench/carry/ carried
# (scripts/gpu-carry.sh). Writes logs and JSON results under $OUT.
#   bench/gpu/run.sh tests     kernel table + PTX check + graph/end-to-end tests
#   bench/gpu/run.sh qwen      random Qwen2.5-0.5B vs transformers, then pimoe bench
#   bench/gpu/run.sh bench     criterion benches per kernel family
set -uo pipefail
C=bench/carry
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# cuBLAS and NVTX come with torch's pip packages on that machine.
NV=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
for d in "$NV"/nvidia/*/lib; do LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d"; done
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
case "${1:-tests}" in
tests)
    $C/kernels --test-threads=1 2>&1 | tee "$OUT/kernels.log"
    $C/gpu_model --test-threads=1 --nocapture 2>&1 | tee "$OUT/gpu_model.log"
    $C/experts 2>&1 | tee "$OUT/experts.log"
    ;;
qwen)
    python3 bench/gpu/qwen_reference.py /tmp/qwen25 2>&1 | tail -n 3 | tee "$OUT/qwen_ref.log"
    PIMOE_QWEN_REF=/tmp/qwen25 $C/gpu_model qwen25 --nocapture 2>&1 | tee "$OUT/qwen_test.log"
    $C/pimoe bench --device cuda --model /tmp/qwen25 --json "$OUT/gpu-qwen2.5-0.5b.json" 2>&1 | tail -n 40
    ;;
bench)
    $C/bench-cuda_ops --bench 2>&1 | tee "$OUT/criterion.log"
    ;;
esac
