#!/usr/bin/env bash
# On the lent GPU machine (device tool): install the carried wheels (.whl: transformers 5.23.0,
# regex, gguf; its image has torch but an older transformers), then `stv bench --device cuda`.
# Here: python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#   --platform manylinux_2_17_x86_64 -d .whl transformers==5.23.0 regex==2026.11.15 gguf==0.19.0
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
python3 -m stv bench --device cuda "$@"
