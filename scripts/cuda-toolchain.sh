#!/usr/bin/env bash
# Installs the pinned CUDA compiler from PyPI into target/cuda-toolchain when no nvcc
# is found (NVCC, PATH, CUDA_HOME), so that build.rs compiles every kernel to PTX on
# machines without CUDA. Pinned to 13.0: the GPU machines run driver 580 (CUDA 13.0),
# which rejects PTX from newer compilers. Idempotent; prints where nvcc is.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${CARGO_TARGET_DIR:-target}/cuda-toolchain"
bundled="$dest/nvidia/cu13/bin/nvcc"

if [[ -n "${NVCC:-}" && -x "$NVCC" ]]; then echo "nvcc: $NVCC (NVCC)"; exit 0; fi
if command -v nvcc >/dev/null; then echo "nvcc: $(command -v nvcc) (PATH)"; exit 0; fi
if [[ -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then echo "nvcc: $CUDA_HOME/bin/nvcc (CUDA_HOME)"; exit 0; fi
if [[ -x "$bundled" ]]; then echo "nvcc: $bundled (pinned, already installed)"; exit 0; fi

echo "no nvcc found: installing the pinned CUDA 13.0 compiler from PyPI into $dest" >&2
tmp="$dest.partial.$$"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$tmp" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
# The wheels share the nvidia/cu13 tree; move it into place only when complete.
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
"$bundled" --version | tail -n 1
echo "nvcc: $bundled (pinned, installed)"
