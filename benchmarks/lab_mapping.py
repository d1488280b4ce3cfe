"""stv+ settings on the lab's mapping tasks, where REINFORCE's draws decide most of the result.

    python benchmarks/lab_mapping.py '{"prefix_pool": 16, "restarts": 1}' '{"prefix_pool": 0, "restarts": 3}'
    python benchmarks/lab_mapping.py --mtv 300 900 300:hits

Each argument is one setting: STVConfig.plus overrides as JSON (or, with --mtv, MTV's step
counts, optionally with its objective: 300:hits). The demo's sizes (M = 16, 100 x 16-shot scan
pairs, 300 steps x 32 samples, 2 queries per step), seeds 0, 1, 2, parity_AB and big_AB, the demo's 200 held-out digits per task, one
scan per (task, seed) shared by the settings. Prints first-token accuracy per fit and the mean
per setting. Results: benchmarks/lab-mapping.md.
"""

import json
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)

from stv.config import STVConfig  # noqa: E402
from stv.data import digit_examples  # noqa: E402
from stv.evaluate import first_token_accuracy  # noqa: E402
from stv.experiments.lab import load_lab  # noqa: E402
from stv.experiments.lab.curve import test_subset  # noqa: E402
from stv.methods.fit import fit_at, scan_pairs  # noqa: E402
from stv.methods.mtv import MTVConfig, fit_mtv  # noqa: E402
from stv.methods.scan import sensitivity_scan  # noqa: E402
from stv.tasks import DIGITS  # noqa: E402

SIZES = {"clusters": 16, "pairs": 100, "shots": 16, "steps": 300, "samples": 32, "batch_size": 25}
mtv = sys.argv[1] == "--mtv"
settings = sys.argv[2:] if mtv else sys.argv[1:]
lab = load_lab()
results: dict[str, list[float]] = {s: [] for s in settings}
for task in ("parity_AB", "big_AB"):
    train, test = digit_examples(task, "train"), test_subset(task, 200)
    for seed in (0, 1, 2):
        scan = None
        if not mtv:
            pairs = scan_pairs(train, DIGITS, SIZES["pairs"], SIZES["shots"], np.random.default_rng(seed))
            scan = sensitivity_scan(lab, pairs, SIZES["batch_size"], progress=False)
        for setting in settings:
            start = time.perf_counter()
            if mtv:
                sizes = {"prompts": 100, "shots": 16, "samples": 32, "queries_per_step": 2, "batch_size": 25}
                steps, _, objective = setting.partition(":")
                cfg = MTVConfig(**sizes, steps=int(steps), seed=seed, objective=objective or "log_prob")  # type: ignore[arg-type]
                vectors = fit_mtv(lab, train, cfg, DIGITS, progress=False)
            else:
                stv = STVConfig.plus(**{**SIZES, "seed": seed, **json.loads(setting)}).resolved(lab)
                locations = scan.top_k(stv.top_k, stv.sensitivity)
                rng = np.random.default_rng(seed + 1000)
                vectors, _ = fit_at(lab, train, stv, DIGITS, scan, locations, rng, progress=False)
            accuracy = first_token_accuracy(lab, test, DIGITS, vectors=vectors)
            results[setting].append(accuracy)
            print(task, seed, setting, f"{accuracy:.1f}", f"{time.perf_counter() - start:.1f} s", flush=True)
for setting, values in results.items():
    print(f"{setting}: {np.round(values, 1).tolist()} mean {np.mean(values):.1f}")
