"""Lab variants one by one: the lab demo's scan and fits (`stv demo`, the same seeds and
data), each variant's first-token accuracy on the demo's 200 held-out queries, and what its
refinement kept (start, held-out scores). Cheaper than a whole demo when only the variants
are in question.

    python benchmarks/lab_variants_probe.py stv+,stv+_both_answer parity_AB,big_AB 0,1,2
"""

import sys
from dataclasses import replace

import torch

from stv.compare import fit_variant
from stv.demo import DemoConfig, _data, _load
from stv.evaluate import first_token_accuracy
from stv.methods.fit import fit

if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    variants, tasks, seeds = (sys.argv[i].split(",") for i in (1, 2, 3))
    config = DemoConfig()
    lmm = _load(config)
    for task in tasks:
        train, test, template = _data(config, task)
        for seed in map(int, seeds):
            stv_cfg = replace(config.stv, seed=seed).resolved(lmm)
            _, state = fit(lmm, train, stv_cfg, task=template, progress=False)  # the demo's scan
            for name in variants:
                vectors, seconds = fit_variant(
                    lmm, train, template, state.scan, name, replace(config.stv, seed=seed), seed
                )
                accuracy = first_token_accuracy(lmm, test, template, train, 0, vectors, seed=seed)
                refined = vectors.config.extra.get("refine", {})
                print(f"{task} seed {seed} {name}: {accuracy:.1f} ({seconds:.0f} s) refine {refined}", flush=True)
