"""Naive vs prefix-cached REINFORCE rewards at the real shapes, under each attention kernel.

`stv bench --device cuda` found the two paths apart on Idefics2-8B even in float32 (max reward
difference 0.38); this isolates whether the attention kernel PyTorch picks (cuDNN on an H100)
is the cause. Run on the GPU machine: PYTHONPATH=src python3 benchmarks/gpu_agreement.py
"""

import json
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from stv.bench_gpu import agreement, build_shape

BACKENDS = {
    "default": None,
    "math": [SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
}
rows = []
for shape in sys.argv[1].split(","):
    for dtype in (torch.float32, torch.bfloat16):
        lmm = build_shape(shape, "cuda", dtype)
        for name, backends in BACKENDS.items():
            try:
                if backends is None:
                    row = agreement(lmm, 32, 64, 448)
                else:
                    with sdpa_kernel(backends):
                        row = agreement(lmm, 32, 64, 448)
            except RuntimeError as err:  # a kernel that refuses these inputs
                row = {"error": str(err).splitlines()[0][:120]}
            rows.append({"shape": shape, "backend": name, **row})
            print(json.dumps(rows[-1]), flush=True)
        del lmm
        torch.cuda.empty_cache()
with open(os.path.join(os.environ.get("OUT", "."), "agreement.json"), "w") as f:
    json.dump(rows, f, indent=1)
