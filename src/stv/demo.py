"""`stv demo`: the whole pipeline on the bundled lab model and digits tasks.

Zero-shot, k-shot ICL, MTV, STV and the paper's ablations, over several seeds, on test
digits; a table of mean ± std, results.json, report.md and plots.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import report
from .data.digits import DIGIT_TASKS, digit_examples
from .evaluate import first_token_accuracy
from .io import atomic_write_json, atomic_write_text
from .lab.curve import test_subset
from .lab.model import load_lab
from .methods.ablations import mean_at_top_k, nearest_to_mean, random_heads
from .methods.fit import STVConfig, fit, fit_at
from .methods.mtv import MTVConfig, fit_mtv
from .tasks import DIGITS

METHODS = ("zero_shot", "icl_1", "icl_4", "icl_16", "icl_32", "mtv", "stv", "stv_mean_topk", "stv_random_heads",
           "stv_no_rl", "stv_relative")  # the last: our variant, heads ranked by delta / query norm


@dataclass
class DemoConfig:
    tasks: tuple[str, ...] = ("parity_word", "size_word", "parity_AB", "big_AB")
    seeds: tuple[int, ...] = (0, 1, 2)
    test_per_task: int = 200
    # The lab has 4 layers x 4 heads = 16 heads, so K is scaled down from the paper's 64 to 8.
    stv: STVConfig = field(default_factory=lambda: STVConfig(top_k=8, clusters=16, pairs=100, shots=16, steps=300,
                                                             samples=32, queries_per_step=2, batch_size=25))
    mtv: MTVConfig = field(default_factory=lambda: MTVConfig(prompts=100, shots=16, steps=300, samples=32,
                                                             queries_per_step=2, batch_size=25))

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(tasks=("parity_word", "parity_AB"), seeds=(0,), test_per_task=100,
                   stv=STVConfig(top_k=8, clusters=8, pairs=40, shots=16, steps=100, samples=16, queries_per_step=2,
                                 batch_size=20),
                   mtv=MTVConfig(prompts=40, shots=16, steps=100, samples=16, queries_per_step=2, batch_size=20))


def run_demo(out: str | Path = "runs/demo", config: DemoConfig | None = None, checkpoint=None,
             progress: bool = True) -> dict:
    config = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lmm = load_lab(checkpoint)
    results = {m: {t: [] for t in config.tasks} for m in METHODS}
    timings: dict[str, list[float]] = {}
    artifacts = {}
    start = time.perf_counter()
    bar = tqdm(total=len(config.tasks) * len(config.seeds), desc="demo", disable=not progress)
    for task in config.tasks:
        train, test = digit_examples(task, "train"), test_subset(task, config.test_per_task)
        for seed in config.seeds:
            def acc(shots=0, vectors=None):
                return round(first_token_accuracy(lmm, test, DIGITS, train, shots, vectors, seed=seed), 2)

            results["zero_shot"][task].append(acc())
            for k in (1, 4, 16, 32):
                results[f"icl_{k}"][task].append(acc(k))
            stv_cfg = STVConfig(**{**asdict(config.stv), "seed": seed})
            vectors, state = fit(lmm, train, stv_cfg, progress=False)
            for stage, seconds in state.timings.items():
                timings.setdefault(f"stv_{stage}", []).append(seconds)
            results["stv"][task].append(acc(vectors=vectors))
            results["stv_mean_topk"][task].append(acc(vectors=mean_at_top_k(state, vectors.config)))
            results["stv_no_rl"][task].append(acc(vectors=nearest_to_mean(state, vectors.config)))
            results["stv_random_heads"][task].append(acc(vectors=random_heads(lmm, train, stv_cfg, DIGITS, state, seed)))
            relative = STVConfig(**{**asdict(stv_cfg), "sensitivity": "relative"})
            rel_vectors, _ = fit_at(lmm, train, relative, DIGITS, state.scan, state.scan.top_k(relative.top_k, "relative"),
                                    np.random.default_rng(seed + 20_000), progress=False)
            results["stv_relative"][task].append(acc(vectors=rel_vectors))
            mtv_vectors, mtv_log = fit_mtv(lmm, train, MTVConfig(**{**asdict(config.mtv), "seed": seed}), progress=False)
            for stage, seconds in mtv_log["timings"].items():
                timings.setdefault(f"mtv_{stage}", []).append(seconds)
            results["mtv"][task].append(acc(vectors=mtv_vectors))
            if seed == config.seeds[0]:
                artifacts[task] = (state, mtv_vectors)
                vectors.save_pretrained(out / "vectors" / task)
            bar.update(1)
    bar.close()
    summary = {"methods": results, "metric": "first-token accuracy over the whole vocabulary, % (test digits)",
               "config": asdict(config), "model": str(lmm.name),
               "timings_seconds": {k: round(float(np.mean(v)), 2) for k, v in timings.items()},
               "wall_seconds": round(time.perf_counter() - start, 1)}
    atomic_write_json(out / "results.json", summary)
    table = report.results_table(results)
    report.accuracy_bars(results, out / "accuracy.png")
    for task, (state, _) in artifacts.items():
        report.sensitivity_heatmap(state.scan.sensitivity, out / f"sensitivity_{task}.png",
                                   title=f"{task}: head sensitivity", marked=state.locations)
        report.policy_curves(state.policy.reward_curve, state.policy.max_prob_curve, out / f"policy_{task}.png",
                             title=f"{task}: STV REINFORCE")
    atomic_write_text(out / "report.md", _report_md(summary, table, artifacts))
    return summary


def _report_md(summary: dict, table: str, artifacts: dict) -> str:
    kinds = {t: DIGIT_TASKS[t].kind for t in summary["methods"]["stv"]}
    lines = ["# stv demo: the lab model on digits tasks", "",
             f"Metric: {summary['metric']}. Mean ± std over seeds {summary['config']['seeds']}.",
             "Task kinds: " + ", ".join(f"{t} ({k})" for t, k in kinds.items()) + ".", "", table, "",
             "Stage times (s, mean per fit): " + ", ".join(f"{k} {v}" for k, v in summary["timings_seconds"].items()),
             f"Total wall time: {summary['wall_seconds']} s.", "", "![accuracy](accuracy.png)", ""]
    for task in artifacts:
        lines += [f"![{task} sensitivity](sensitivity_{task}.png) ![{task} policy](policy_{task}.png)", ""]
    return "\n".join(lines)
