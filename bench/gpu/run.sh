#!/usr/bin/env bash
# Runs on the lent GPU machine from the repository root, with bench/carry/ carried
# (scripts/gpu-carry.sh). Writes logs and JSON results under $OUT.
#   bench/gpu/run.sh tests     kernel table + PTX check + graph/end-to-end tests
#   bench/gpu/run.sh qwen      random Qwen2.5-0.5B vs transformers, then pimoe bench
#   bench/gpu/run.sh bench     criterion benches per kernel family
#   bench/gpu/run.sh scenario  pimoe bench --scenario grid: LLM-only, PiMoE, tool-call
#                              (needs the default model in weights/, bench/NOTES.md)
#   bench/gpu/run.sh reference the PiERN reference's loop vs pimoe, same random
#                              full-shape composition, built here (bench/reference/)
#   bench/gpu/run.sh ncu       the steps profile-kernels counts on the emulator
#                              (bench/results/profile-*.json), timed and under
#                              Nsight Compute, compared kernel by kernel
set -uo pipefail
C=bench/carry
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# cuBLAS and NVTX come with torch's pip packages on that machine.
NV=$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)
for d in "$NV"/nvidia/*/lib; do LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d"; done
export LD_LIBRARY_PATH
# The profile test runs the carried CLI under ncu.
export PIMOE_BIN=$C/pimoe
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
case "${1:-tests}" in
tests)
    $C/kernels --test-threads=1 2>&1 | tee "$OUT/kernels.log"
    $C/gpu_model --test-threads=1 --nocapture 2>&1 | tee "$OUT/gpu_model.log"
    $C/experts 2>&1 | tee "$OUT/experts.log"
    $C/profile --nocapture 2>&1 | tee "$OUT/profile.log"
    ;;
scenario)
    $C/pimoe bench --scenario grid --device cuda --per-task "${PER_TASK:-8}" --concurrency 1,8,32 \
        --json "$OUT/scenario-grid-gpu.json" 2>&1 | tail -n 20
    ;;
qwen)
    python3 bench/gpu/qwen_reference.py /tmp/qwen25 2>&1 | tail -n 3 | tee "$OUT/qwen_ref.log"
    PIMOE_QWEN_REF=/tmp/qwen25 $C/gpu_model qwen25 --nocapture 2>&1 | tee "$OUT/qwen_test.log"
    $C/pimoe bench --device cuda --model /tmp/qwen25 --json "$OUT/gpu-qwen2.5-0.5b.json" 2>&1 | tail -n 40
    ;;
bench)
    $C/bench-cuda_ops --bench 2>&1 | tee "$OUT/criterion.log"
    $C/bench-end_to_end --bench 2>&1 | tee "$OUT/criterion-e2e.log"
    ;;
ncu)
    # Each step: 200 timed replays, then one run under ncu (warm-ups + the counted
    # step; ~1 minute each), then the comparison with the emulator's JSON.
    M=$(python3 bench/gpu/ncu_compare.py --metrics)
    for s in decode:1:512 decode:64:600 prefill:1:2048; do
        IFS=: read -r step batch ctx <<<"$s"
        tag=$step-b$batch-ctx$ctx
        args=(profile-kernels --device cuda --step "$step" --batch "$batch" --ctx "$ctx")
        $C/pimoe "${args[@]}" --replays 200 --json "$OUT/gpu-$tag.json" 2>&1 | tail -n 1
        ncu --clock-control none --csv --page raw --metrics "$M" $C/pimoe "${args[@]}" --replays 0 \
            >"$OUT/ncu-$tag.csv" 2>"$OUT/ncu-$tag.err"
        python3 bench/gpu/ncu_compare.py --emulator "bench/results/profile-$tag.json" --ncu "$OUT/ncu-$tag.csv" \
            --timing "$OUT/gpu-$tag.json" --gpu "$OUT/gpu.txt" --out "$OUT/ncu-vs-emulator-$tag.json"
    done
    ;;
reference)
    # About 4 minutes on an H100/H200 (bench/NOTES.md). The weights (~7 GB) are made
    # here, never carried. Each step runs even if one before it failed; 6 files back.
    # The CPU smoke check: DEVICE=cpu TINY=1 ANSWERS=2 MAX_NEW=16 (a 2-layer body).
    D=${DEVICE:-cuda}
    R=${TMPDIR:-/tmp}/piern-bench
    L="$OUT/reference.log"
    rm -rf "$R" && mkdir -p "$R"
    export PYTHONUNBUFFERED=1
    step() { echo "== $* ($(date -u +%T))" >>"$L"; "$@" 2>&1 | grep --line-buffered -v -E 'it/s]|s/it]' | tee -a "$L"; }
    step python3 bench/reference/qwen_tokenizer.py "$R/tokenizer" --tiktoken $C/qwen.tiktoken
    step python3 tests/fixtures/make_piern_reference.py --bench "$R/full" --tokenizer "$R/tokenizer/tokenizer.json" \
        ${TINY:+--tiny}
    LOOP=(bench/reference/piern_loop.py --composition "$R/full/converted" --device "$D"
        --answers "${ANSWERS:-8}" --max-new-tokens "${MAX_NEW:-100}" --max-firings 1)
    step python3 "${LOOP[@]}" --dtype float32 --out "$OUT/loop-fp32.json" --workload "$R/workload.json"
    step $C/pimoe bench-answers --manifest "$R/full/converted/piern-loop.json" --workload "$R/workload.json" \
        --device "$D" --json "$OUT/pimoe.json"
    step python3 "${LOOP[@]}" --dtype bfloat16 --out "$OUT/loop-bf16.json" --workload "$R/workload-bf16.json"
    refs=()
    for f in "$OUT/loop-fp32.json" "$OUT/loop-bf16.json"; do [ -f "$f" ] && refs+=(--reference "$f"); done
    [ -f "$OUT/pimoe.json" ] && [ ${#refs[@]} -gt 0 ] &&
        step python3 bench/reference/compare.py "${refs[@]}" --pimoe "$OUT/pimoe.json" --gpu "$OUT/gpu.txt" \
            --out "$OUT/reference-vs-pimoe.json"
    echo "== done ($(date -u +%T))" >>"$L"
    ;;
esac
