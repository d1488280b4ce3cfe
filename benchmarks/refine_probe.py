"""Does a gradient correction at the chosen heads help? (methods/refine.py, on a real model)

For each task and seed: compare's scan, a stv+ fit (as `stv compare --steps 80`), then the same
artifact refined at several learning rates; first-token and exact-match accuracy on compare's
30 test queries, and the held-out training score refinement judged by. Also, as a baseline
that uses no bank and no search: a correction learned from zero at every head.

    python benchmarks/refine_probe.py smollm2-135m capitalize,... 0 [--zero-only] > benchmarks/refine-probe-smollm2.txt

(``--zero-only``: only the correction learned from zero at every head, no scan or fit.
``--variants V1,V2``: instead, fit these compare variants and show each as fitted, without its
continuation vectors, and under the other schedule: where a fit's exact match is lost.)
"""

import sys
import time
from dataclasses import replace

import numpy as np
import torch

from stv import load_model
from stv.evaluate import generation_accuracy
from stv.experiments.compare import _mtv_fits, fit_variant, fv_task
from stv.methods.fit import STVConfig, scan_pairs
from stv.methods.refine import at_every_location, refine
from stv.methods.scan import sensitivity_scan
from stv.vectors import TaskVectors, TaskVectorsConfig

BASE = STVConfig.paper(top_k=0, clusters=16, pairs=40, shots=10, steps=80, samples=32, batch_size=8)
LRS = (0.02, 0.05, 0.1)
STEPS, BATCH = 60, 16


def _first(lr: float) -> STVConfig:
    """STEPS steps of refinement at ``lr`` on the answer's first token."""
    return STVConfig(refine=STEPS, refine_lr=lr, refine_objective="first_token")


def probe(
    lmm, task_name: str, seed: int, zero_only: bool = False, variants: list[str] | None = None, mtv: bool = False
) -> None:
    train, test, task = fv_task(task_name, 30)

    def show(label: str, vectors, seconds: float = 0.0, log=None) -> None:
        policy = vectors.config.policy
        first, exact = generation_accuracy(lmm, test, task, train, 0, vectors, seed=seed, policy=policy)
        held = f" held-out {log.before:.3f}->{log.after:.3f} kept step {log.kept_step}" if log else ""
        print(f"{task_name} seed {seed} {label}: {first:.1f} / {exact:.1f} ({seconds:.0f} s){held}", flush=True)

    if mtv:
        pairs = scan_pairs(train, task, BASE.pairs, BASE.shots, np.random.default_rng(seed))
        scan = sensitivity_scan(lmm, pairs, BASE.batch_size, progress=False)
        fits = _mtv_fits(lmm, train, task, scan, BASE, seed, [])  # compare's MTV rows
        for method, vectors, policy, seconds in fits:
            show(f"{method} ({policy})", replace(vectors, config=vectors.config.with_(policy=policy)), seconds)
        start = fits[1][1]
        start = replace(start, config=start.config.with_(policy="prompt_last"))
        everywhere = at_every_location(start, lmm.heads.all_locations())
        t = time.perf_counter()
        rng = np.random.default_rng(seed)
        learned, log = refine(lmm, everywhere, train, task, config=STVConfig(refine=STEPS), rng=rng, batch=BATCH, progress=False)
        show("mtv_prompt_last + answer refinement at every head", learned, time.perf_counter() - t, log)
        return
    if variants:
        pairs = scan_pairs(train, task, BASE.pairs, BASE.shots, np.random.default_rng(seed))
        scan = sensitivity_scan(lmm, pairs, BASE.batch_size, progress=False)
        for name in variants:
            vectors, seconds = fit_variant(lmm, train, task, scan, name, BASE, seed)
            refined = vectors.config.extra.get("refine", {})
            print(f"{task_name} seed {seed} {name}: policy {vectors.config.policy}, refine {refined}", flush=True)
            show(name, vectors, seconds)
            if vectors.continuation is not None:
                show(f"{name} without continuation", replace(vectors, continuation=None))
            other = "every_step" if vectors.config.policy == "prompt_last" else "prompt_last"
            show(f"{name} under {other}", replace(vectors, config=vectors.config.with_(policy=other)))
        return
    every = lmm.heads.all_locations()
    nan = torch.full((len(every), lmm.heads.head_dim), float("nan"))  # (n, D): every head keeps its output
    nothing = TaskVectors(torch.tensor(every), nan, config=TaskVectorsConfig.for_fit(lmm, "stv", BASE, task, train))
    nothing.config = nothing.config.with_(policy="prompt_last")
    for lr in LRS[1:2]:
        t = time.perf_counter()
        learned, log = refine(lmm, nothing, train, task, config=_first(lr), rng=seed, batch=BATCH, progress=False)
        show(f"zero + refined at every head lr {lr}", learned, time.perf_counter() - t, log)
    if zero_only:
        return
    pairs = scan_pairs(train, task, BASE.pairs, BASE.shots, np.random.default_rng(seed))
    scan = sensitivity_scan(lmm, pairs, BASE.batch_size, progress=False)
    vectors, seconds = fit_variant(lmm, train, task, scan, "stv+", BASE, seed)
    show("stv+", vectors, seconds)
    for lr in LRS:
        t = time.perf_counter()
        refined, log = refine(lmm, vectors, train, task, config=_first(lr), rng=seed, batch=BATCH, progress=False)
        show(f"stv+ refined lr {lr}", refined, time.perf_counter() - t, log)


if __name__ == "__main__":
    torch.set_num_threads(1)
    model = load_model(sys.argv[1])
    for name in sys.argv[2].split(","):
        for s in map(int, sys.argv[3].split(",")):
            chosen = sys.argv[sys.argv.index("--variants") + 1].split(",") if "--variants" in sys.argv else None
            probe(model, name, s, zero_only="--zero-only" in sys.argv, variants=chosen, mtv="--mtv" in sys.argv)
