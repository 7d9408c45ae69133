#!/usr/bin/env bash
# Installs the pinned `openai` Python client into a venv under target/ for the server
# tests (tests/serve.rs), which drive `pimoe serve` with it as users do. Idempotent;
# the venv is built beside its final place and moved in only when complete. Prints
# the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${CARGO_TARGET_DIR:-target}/openai-venv"
python="$dest/bin/python"
if [[ -x "$python" ]] && "$python" -c "import openai" 2>/dev/null; then echo "$python"; exit 0; fi

echo "installing the pinned openai client from PyPI into $dest" >&2
tmp="$dest.partial.$$"
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp"
"$tmp/bin/python" -m pip install --quiet --disable-pip-version-check openai==3.63.0 >&2
# Only `python -m` and the interpreter are used, which find the venv from where it lies.
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
"$python" -c "import openai" >&2
echo "$python"
