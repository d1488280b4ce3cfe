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
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "warning: torchvision is installed in .venv; stv does not need it" >&2
fi
