"""Steer or overwrite? Heads written with no search, two ways, on a real model (seed 0).

Replacing a head's last-token output by its mean with-context activation (MTV's vector) vs
adding the mean delta (with minus without demonstrations) to the head's own output (the shift
arm), at every head and at the 16 / 64 heads of largest ||mean delta||; first-token accuracy
on `stv compare`'s 30 test queries per task; 40 pairs of 10 shots as compare's scan.

    python benchmarks/steer_probe.py smollm2-135m > benchmarks/steer-probe-smollm2.txt
"""

import sys

import numpy as np
import torch

from stv import load_model
from stv.experiments.compare import fv_task
from stv.hooks.heads import write_heads
from stv.methods.fit import scan_pairs
from stv.methods.reward import first_token_ids
from stv.methods.scan import record_prompts

TASKS = ("capitalize", "lowercase_first_letter", "present-past", "choose_first_of_5")


def probe(lmm, task_name: str) -> dict[str, float]:
    """First-token accuracy (%) of each way of writing heads, for one task."""
    locs = lmm.heads.all_locations()
    train, test, task = fv_task(task_name, 30)
    pairs = scan_pairs(train, task, 40, 10, np.random.default_rng(0))
    alone = torch.cat([record_prompts(lmm, [q for q, _ in pairs[i : i + 8]]) for i in range(0, 40, 8)])  # (T, n, D)
    context = torch.cat([record_prompts(lmm, [c for _, c in pairs[i : i + 8]]) for i in range(0, 40, 8)])
    mean_c, delta = context.mean(0), (context - alone).mean(0)  # (n, D) each
    prompts = [task.prompt([], q) for q in test]
    own = record_prompts(lmm, prompts)  # (30, n, D) the heads' own outputs on the test queries
    targets = first_token_ids(lmm, test, task)

    def acc(values: torch.Tensor, idx: list[int] | None = None) -> float:
        sel = list(range(len(locs))) if idx is None else idx
        with torch.inference_mode(), write_heads(lmm.model, lmm.heads, [locs[i] for i in sel], values[..., sel, :]):
            return 100.0 * float((lmm.forward(prompts).argmax(-1) == targets).float().mean())

    order = torch.argsort(delta.norm(dim=-1), descending=True).tolist()
    out = {"zero": acc(own), "replace_all": acc(mean_c)}
    for a in (0.5, 1.0, 2.0):
        out[f"add_all_{a}"] = acc(own + a * delta)
    for k in (16, 64):
        out[f"replace_top{k}"] = acc(mean_c, order[:k])
        out[f"add_top{k}"] = acc(own + delta, order[:k])
        out[f"add2_top{k}"] = acc(own + 2 * delta, order[:k])
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    model = load_model(sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m")
    for name in TASKS:
        print(name, {k: round(v, 1) for k, v in probe(model, name).items()}, flush=True)
