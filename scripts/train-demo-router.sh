#!/usr/bin/env bash
# Trains the demo's router (src/tasks/demo/router.safetensors, embedded in the binary)
# from the LLM's own answers: `pimoe router-data` has SmolLM2 answer the training split's
# grid questions alone and marks where each answer's number starts; `pimoe train router
# --kind hidden-gate` fits a gate on the hidden states at those places. Deterministic for
# the seeds below (greedy answers, seeded split and initialisation). On the 2-core dev
# machine: about 15 minutes for the answers and 15 for the features (cached under
# weights/.cache/features, so a second training run takes seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data=target/demo/router-data.jsonl
mkdir -p target/demo
if [[ ! -s "$data" ]]; then
    cargo run --release -- router-data --per-task 80 --seed 7 --max-tokens 48 --out "$data" --device cpu
fi
cargo run --release -- train router --kind hidden-gate --data "$data" \
    --experts dc-power-flow,ac-power-flow --activation softmax --inner 64 \
    --epochs 40 --batch 64 --lr 1e-3 --seed 1 --out target/demo --name router
cp target/demo/router.safetensors src/tasks/demo/router.safetensors
echo "router: src/tasks/demo/router.safetensors (fragment: target/demo/router.json)"
