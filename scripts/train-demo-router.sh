#!/usr/bin/env bash
# Trains the demo's router (src/tasks/demo/router.safetensors, embedded in the binary)
# from the LLM's own answers: `pimoe router-data` has SmolLM2 answer the training split's
# grid questions alone and marks where each answer's number starts; `pimoe train router
# --kind hidden-gate` fits a gate on the hidden states at those places. Deterministic for
# the seeds below (greedy answers, seeded split and initialisation). On the 2-core dev
# machine: about 15 minutes for the answers and 15 for the features (cached under
# weights/.cache/features, so a second training run takes seconds).
#
# MODEL=FILE.gguf ROUTER=PATH trains the same gate on another LLM's answers and hidden
# states (e.g. the Q4_K_M file of bench/manifests/grid-q4_k_m-retrained.json) and writes
# it to PATH instead; its data and fragment go under target/demo-<file stem>.
set -euo pipefail
cd "$(dirname "$0")/.."
model_args=()
dir=target/demo
router=src/tasks/demo/router.safetensors
if [[ -n "${MODEL:-}" ]]; then
    model_args=(--model "$MODEL")
    stem=$(basename "$MODEL")
    dir=target/demo-${stem%.*}
    router=${ROUTER:?ROUTER=PATH names where the router trained on MODEL goes}
fi
data=$dir/router-data.jsonl
mkdir -p "$dir"
if [[ ! -s "$data" ]]; then
    cargo run --release -- router-data "${model_args[@]}" --per-task 80 --seed 7 --max-tokens 48 \
        --out "$data.part" --device cpu
    mv "$data.part" "$data"
fi
cargo run --release -- train router "${model_args[@]}" --kind hidden-gate --data "$data" \
    --experts dc-power-flow,ac-power-flow --activation softmax --inner 64 \
    --epochs 40 --batch 64 --lr 1e-3 --seed 1 --out "$dir" --name router
cp "$dir/router.safetensors" "$router"
echo "router: $router (fragment: $dir/router.json)"
