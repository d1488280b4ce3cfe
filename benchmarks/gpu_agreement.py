"""Why naive and prefix-cached REINFORCE rewards differ at the real shapes (random weights).

`stv bench --device cuda` found the two paths apart by 0.07-0.4 in log-prob on Qwen2-VL-7B and
Idefics2-8B, in float32 too, and under PyTorch's math attention kernel too, while tiny builds
agree to 1e-7. Two checks: (1) the naive path against itself under two attention kernels
(default vs math): if that moves the logits as much, tiny rounding differences are being
amplified by the random network; (2) the same comparison with weights drawn at a smaller
standard deviation, where a random transformer contracts perturbations instead.
Run on the GPU machine: PYTHONPATH=src python3 benchmarks/gpu_agreement.py SHAPES
"""

import json
import os
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from stv.bench import _prompt
from stv.bench_gpu import agreement, build_shape

rows = []
for shape in sys.argv[1].split(","):
    for std in (None, 0.005):
        lmm = build_shape(shape, "cuda", torch.float32, init_std=std)
        inputs = lmm.prepare([_prompt(4, seed=1, size=448)])
        with torch.inference_mode():
            default = lmm.model(**inputs, use_cache=False, logits_to_keep=1).logits[0, -1].float()
            with sdpa_kernel([SDPBackend.MATH]):
                math = lmm.model(**inputs, use_cache=False, logits_to_keep=1).logits[0, -1].float()
        kernel_rel = float((default - math).norm() / default.norm())
        row = {"shape": shape, "init_std": std or 0.02, "naive_default_vs_math_rel": kernel_rel, **agreement(lmm, 32, 64, 448)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del lmm
        torch.cuda.empty_cache()
with open(os.path.join(os.environ.get("OUT", "."), "agreement.json"), "w") as f:
    json.dump(rows, f, indent=1)
