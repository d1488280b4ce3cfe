"""The demo's outputs from its (task, seed) units: results.json, report.md and the plots.
Reads units only, so a report can be rewritten without a model (``stv demo --report-only``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import report
from ..io import atomic_write_json, atomic_write_text
from ..runs.costs import cost_summary
from ..runs.fingerprint import note_written

if TYPE_CHECKING:
    from .demo import DemoConfig


def write_results(
    out: Path, config: DemoConfig, model: str, units: dict, wall: float, redraw: list[str] | None = None
) -> dict:
    """results.json, report.md and plots from the units so far; the per-task plots of ``redraw``
    only (None: every task's), since a new unit changes only its own task's."""
    summary = summary_of(config, model, units, wall)
    atomic_write_json(out / "results.json", summary)
    plots = write_report(out, summary, units, config, redraw)
    note_written(out, "results.json", "report.md", *plots)
    return summary


def summary_of(config: DemoConfig, model: str, units: dict[tuple[str, int], dict], wall: float) -> dict:
    """results.json's content from the units finished so far (in task, seed order)."""
    metrics = ["first_token"] + (["exact_match"] if config.max_new_tokens else [])
    methods = config.methods()
    tasks = [t for t in config.tasks if any(task == t for task, _ in units)]  # a partial run: those begun
    # metric -> method -> task -> one value per seed
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        m: {name: {t: [] for t in tasks} for name in methods} for m in metrics
    }
    timings: dict[str, list[float]] = {}
    spent: dict[str, list[dict]] = {}
    for (task, _), unit in units.items():
        for method, cost in unit.get("costs", {}).items():
            spent.setdefault(method, []).append(cost)
        for method in methods:
            for metric, value in zip(metrics, unit["scores"][method]):
                results[metric][method][task].append(value)
        for stage, seconds in unit["timings"].items():
            timings.setdefault(stage, []).append(seconds)
    total = len(config.tasks) * len(config.seeds)
    return {
        "results": results,
        "methods": results["first_token"],
        "model": model,
        "metric": {
            "first_token": "first-token accuracy over the whole vocabulary, % (held-out queries)",
            "exact_match": "exact match of the generated first line, % (held-out queries)",
        },
        "config": asdict(config),
        "timings_seconds": {k: round(float(np.mean(v)), 2) for k, v in timings.items()},
        "costs": {method: cost_summary(costs) for method, costs in spent.items()},
        "top_k": next(iter(units.values()))["top_k"],
        "units": [len(units), total],
        "partial": len(units) < total,
        "unit_seconds": round(sum(u["wall_s"] for u in units.values()), 1),  # computing them, whenever
        "wall_seconds": round(wall, 1),  # this run's, resumed units cost none
    }


def write_report(
    out: Path, summary: dict, units: dict[tuple[str, int], dict], config: DemoConfig, redraw: list[str] | None = None
) -> list[str]:
    """report.md and the plots; returns the plots' names (what stv wrote into ``out``)."""
    plots: list[str] = []
    costs = summary.get("costs", {})
    tables = {metric: report.results_table(per, costs) for metric, per in summary["results"].items()}
    icl = f"icl_{max(config.icl_shots)}"
    for metric, per in summary["results"].items():
        plots.append("accuracy.png" if metric == "first_token" else f"accuracy_{metric}.png")
        report.accuracy_bars(
            per, out / plots[-1], title=f"{summary['model']}: {metric.replace('_', ' ')} (%)", reference=icl
        )
    ranking = config.stv.sensitivity
    plotted = [t for t in config.tasks if any(task == t for task, _ in units)]
    for task in plotted if redraw is None else [t for t in plotted if t in redraw]:
        seed = min(s for t, s in units if t == task)
        plot = units[(task, seed)]["plot"]
        plots += [f"sensitivity_{task}.png", f"reinforce_{task}.png"]
        report.sensitivity_heatmap(
            plot["sensitivity"],
            out / f"sensitivity_{task}.png",
            marked=[tuple(location) for location in plot["locations"]],
            title=f"{task}: head sensitivity ({ranking}), paper's STV heads (seed {seed})",
            label=f"{ranking} score",
        )
        report.reinforce_curves(
            plot["reward_curve"], plot["max_prob_curve"], out / f"reinforce_{task}.png", title=f"{task}: STV REINFORCE"
        )
    seeds = list(config.seeds)
    command = " ".join(
        ["stv demo"]
        + ([f"--model {config.model}"] if config.model else [])
        + (["--quick"] if config.is_quick else [])
        + ([f"--seed {seeds[0]}"] if seeds != ([0] if config.is_quick else [0, 1, 2]) else [])
        + [f"--out {out}"]
    )
    spread = f"mean ± std over seeds {seeds}" if len(seeds) > 1 else f"one seed ({seeds[0]})"
    done, total = summary["units"]
    lines = [
        f"# stv demo: {summary['model']}",
        "",
        *([f"**partial: {done} of {total} (task, seed) units**", ""] if done < total else []),
        f"{spread}; n = {config.test_per_task} held-out queries per task (the same queries for every "
        f"method and seed). Reproduce with `{command}`.",
        "",
    ]
    for metric, table in tables.items():
        lines += [f"## {summary['metric'][metric]}", "", table, ""]
    if config.max_new_tokens:
        lines += [f"Exact match is generated with task vectors inserted under the `{config.em_policy}` schedule.", ""]
    lines += [
        "Heads searched (K): " + ", ".join(f"{k} {v}" for k, v in summary["top_k"].items()) + ".",
        "",
        "Stage times (s, mean per fit): " + ", ".join(f"{k} {v}" for k, v in summary["timings_seconds"].items()),
        f"Time computing the units: {summary['unit_seconds']} s (this run: {summary['wall_seconds']} s).",
        "",
        "![accuracy](accuracy.png)",
        "",
    ]
    lines += [f"![{t} sensitivity](sensitivity_{t}.png) ![{t} REINFORCE](reinforce_{t}.png)" for t in plotted]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return plots
