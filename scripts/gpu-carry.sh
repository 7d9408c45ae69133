#!/usr/bin/env bash
# Prepares bench/carry/ (git-ignored) for the lent GPU machine, which has no cargo
# and no network: release builds of the CLI and of the GPU test and bench
# executables (PTX embedded by the pinned nvcc), plus the runner bench/gpu/run.sh.
# The default model travels separately (weights/ is ignored and over the 64 MiB
# carry limit): see bench/NOTES.md, "GPU runs".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/cuda-toolchain.sh >/dev/null
rm -rf bench/carry && mkdir -p bench/carry
cargo build --release --bin pimoe
cp target/release/pimoe bench/carry/
# cargo prints each test/bench executable as a JSON artifact; keep the GPU ones.
cargo test --release --no-run --message-format=json --test kernels --test gpu_model --test experts 2>/dev/null |
    python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], "bench/carry/" + m["target"]["name"])
        print("carry:", m["target"]["name"])
'
cargo bench --no-run --message-format=json --bench cuda_ops 2>/dev/null |
    python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        shutil.copy(m["executable"], "bench/carry/bench-" + m["target"]["name"])
        print("carry: bench-" + m["target"]["name"])
'
du -sh bench/carry
