"""One lab fit of stv+ looked at per digit class: its test accuracy on each class, the heads it
replaces, and the accuracy with each of them turned into steering (no refinement after), or
all of them. Tells a fit that lost a whole class from one that is under-trained.

    python benchmarks/lab_class_diagnosis.py big_AB 13
"""

import sys
from dataclasses import replace

import numpy as np
import torch

from stv.experiments.compare import fit_variant
from stv.experiments.demo import DemoConfig, _data, _load
from stv.methods.fit import scan_pairs
from stv.methods.refine import shifts_of, steered
from stv.methods.reward import first_token_ids
from stv.methods.scan import sensitivity_scan

if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task, seed = sys.argv[1], int(sys.argv[2])
    variant = sys.argv[3] if len(sys.argv) > 3 else "stv+"
    config = DemoConfig()
    lmm = _load(config)
    train, test, template = _data(config, task)
    pairs = scan_pairs(train, template, config.stv.pairs, config.stv.shots, np.random.default_rng(seed))
    scan = sensitivity_scan(lmm, pairs, config.stv.batch_size, progress=False)  # the demo's scan
    vectors, _ = fit_variant(lmm, train, template, scan, variant, replace(config.stv, seed=seed), seed)
    print("refine", vectors.config.extra.get("refine"), "arms", vectors.config.extra.get("arms"))
    prompts = [template.prompt([], q) for q in test]
    targets = first_token_ids(lmm, test, template)
    classes = np.array([q.metadata["class"] for q in test])

    def per_class(written) -> tuple[float, dict[int, int]]:
        with written.apply(lmm):
            right = (lmm.forward(prompts).argmax(-1).cpu() == targets).numpy()
        return round(100 * right.mean(), 1), {c: round(100 * right[classes == c].mean()) for c in range(10)}

    print(variant, per_class(vectors))
    rows = (~torch.isnan(vectors.vectors).any(-1)).nonzero().flatten().tolist()
    print("replaced", [tuple(vectors.locations[r].tolist()) for r in rows])
    as_steering = steered(lmm, vectors, template, train[:64])
    for r in rows:
        values, shifts = vectors.vectors.clone(), shifts_of(vectors).clone()  # (K, D) each
        values[r], shifts[r] = float("nan"), as_steering.shifts[r]
        print(
            "turned", tuple(vectors.locations[r].tolist()), per_class(replace(vectors, vectors=values, shifts=shifts))
        )
    print("all turned", per_class(as_steering))
