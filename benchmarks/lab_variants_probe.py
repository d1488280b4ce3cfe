"""Lab variants one by one: the lab demo's scan and fits (`stv demo`, the same seeds and
data), each variant's first-token accuracy on the demo's 200 held-out queries, and what its
refinement kept (start, held-out scores). Cheaper than a whole demo when only the variants
are in question.

    python benchmarks/lab_variants_probe.py stv+,stv+_both_answer parity_AB,big_AB 0,1,2

A variant may carry settings after a colon, which change it but not its random draws:
``stv+:refine=180:refine_lr=0.1`` (the search as stv+'s, refinement longer and faster).
"""

import sys
from dataclasses import replace

import numpy as np
import torch

from stv.evaluate import first_token_accuracy
from stv.experiments.compare import fit_variant
from stv.experiments.demo import DemoConfig, _data, _load
from stv.methods.fit import scan_pairs
from stv.methods.scan import sensitivity_scan

if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    variants, tasks, seeds = (sys.argv[i].split(",") for i in (1, 2, 3))
    config = DemoConfig()
    lmm = _load(config)
    for task in tasks:
        train, test, template = _data(config, task)
        for seed in map(int, seeds):
            pairs = scan_pairs(train, template, config.stv.pairs, config.stv.shots, np.random.default_rng(seed))
            scan = sensitivity_scan(lmm, pairs, config.stv.batch_size, progress=False)  # the demo's (fit's) scan
            for spec in variants:
                vectors, seconds = fit_variant(lmm, train, template, scan, spec, replace(config.stv, seed=seed), seed)
                accuracy = first_token_accuracy(lmm, test, template, train, 0, vectors, seed=seed)
                refined = vectors.config.extra.get("refine", {})
                print(f"{task} seed {seed} {spec}: {accuracy:.1f} ({seconds:.0f} s) refine {refined}", flush=True)
