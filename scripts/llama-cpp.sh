#!/usr/bin/env bash
# Installs the pinned llama-cpp-python (which compiles llama.cpp from source: 15-25
# minutes on 2 cores), gguf and numpy into a venv under target/ for
# bench/llama_cpp_baseline.py and bench/llama_cpp_compare.py, the llama.cpp side of
# issue 16's comparisons. Not needed by the test suite. Idempotent; the venv is built
# beside its final place and moved in only when complete. Prints the venv's python, so
# that `$(scripts/llama-cpp.sh) bench/llama_cpp_compare.py ...` runs a script with it.
# LLAMA_VENV=DIR uses (or makes) the venv there instead.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${LLAMA_VENV:-${CARGO_TARGET_DIR:-target}/llama-venv}"
python="$dest/bin/python"
check='import llama_cpp, gguf, numpy; assert llama_cpp.__version__ == "0.3.36", llama_cpp.__version__'
if [[ -x "$python" ]] && "$python" -c "$check" 2>/dev/null; then echo "$python"; exit 0; fi

echo "building llama-cpp-python 0.3.36 (llama.cpp from source, CPU only) into $dest" >&2
tmp="$dest.partial.$$"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp"
# llama.cpp's default build: CPU only, native to this CPU (CMAKE_ARGS from the
# environment passes through to its cmake).
"$tmp/bin/python" -m pip install --quiet \
    --disable-pip-version-check --no-cache-dir llama-cpp-python==0.3.36 gguf==0.19.0 numpy==2.4.6 >&2
# A venv's scripts name its path; only the interpreter is used, which finds the venv
# from where it lies.
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
"$python" -c "$check" >&2
echo "$python"
