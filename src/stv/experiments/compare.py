"""`stv compare`: STV variants side by side on the same scans, data and seeds.

The expensive part of a fit is the sensitivity scan; every variant here differs only after
it (which heads, which arms, which reward, which insertion), so one scan per (task, seed)
serves them all and each variant costs its REINFORCE alone. The table reports first-token
accuracy, exact match of the generated answer and the fit time of each variant, with MTV
(means from the same scan) and ICL as references.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence, cast

import numpy as np
from tqdm.auto import tqdm

from ..config import Objective
from ..evaluate import generation_accuracy
from ..io import atomic_write_json, atomic_write_text
from ..methods.continuation import with_continuation
from ..methods.fit import STVConfig, fit_at, fit_without_search, scan_pairs
from ..methods.lora import LoRAConfig, fit_lora
from ..methods.mtv import MTVConfig, fit_mtv
from ..methods.scan import ScanResult, sensitivity_scan
from ..methods.schedule import choose_schedule
from ..report import COST_HEADER, cost_cells, cost_front
from ..runs.costs import cost_summary, measured, needs_backward, stored_numbers
from ..runs.fingerprint import model_identity, prepare_folder, stored_unit, unit_data, unit_path
from .variants import VARIANTS, variant_config, variant_settings, variant_spec

FIT_LOG = ("arms", "refine", "continuation_search", "schedule_scores")  # what a fit chose, kept beside its scores


def fit_choices(vectors) -> dict:
    """What a variant's fit chose: its schedule, arms (heads given a centroid / the mean / left
    alone), refinement (the start kept, each start's held-out score), continuation search."""
    extra = vectors.config.extra
    return {"policy": vectors.config.policy, **{key: extra[key] for key in FIT_LOG if key in extra}}


def fit_variant(lmm, train, template, scan: ScanResult, name: str, base: STVConfig, seed: int):
    """(TaskVectors, seconds) of one variant fitted on a shared scan. Settings carried by the
    name change the variant but not its random draws (``stv+:refine=0`` searches as stv+)."""
    cfg = variant_config(name, replace(base, seed=seed)).resolved(lmm)  # top_k 0: the variant's own default
    start = time.perf_counter()
    rng = np.random.default_rng(seed + 1_000 + sum(map(ord, variant_spec(name)[0])))
    if cfg.needs_scan(lmm.heads.num_layers * lmm.heads.num_heads):
        vectors, _ = fit_at(
            lmm, train, cfg, template, scan, scan.top_k(cfg.top_k, cfg.sensitivity), rng, progress=False
        )
    else:  # no search: the shared scan is not read
        vectors, _ = fit_without_search(lmm, train, cfg, template, rng, progress=False)
    vectors.config.extra["variant"] = name
    return vectors, time.perf_counter() - start


def run_compare(
    lmm,
    tasks: Sequence[str],
    seeds: Sequence[int],
    variants: Sequence[str],
    base: STVConfig,
    test_per_task: int = 40,
    icl_shots: int = 10,
    max_new_tokens: int = 8,
    progress: bool = True,
    out: str | Path | None = None,
    recompute: bool = False,
    mtv_steps: int = 0,
    mtv_extras: bool = True,
) -> dict:
    """{"rows": [{task, seed, method, first_token, exact_match, fit_s}], ...} on fv: tasks.

    With ``out`` every finished (task, seed) is kept in ``out/units/`` as it ends and
    ``compare.json``/``compare.md`` are rewritten (labelled partial until the last one): a
    killed run loses one unit at most, and a rerun with the same settings picks up the units
    already there (another task or seed list too: units are independent). ``out`` holding
    other settings is refused; ``recompute`` clears it first. ``mtv_extras`` False: MTV alone, not also
    MTV under each variant's objective and schedule choice. ``mtv_steps`` > 0: MTV's
    searches take that many steps instead of ``base.steps`` (MTV at the variants' budget)."""
    for name in variants:
        variant_config(name, base)  # unknown names fail before any forward pass
    task_data = {task: fv_task(task, test_per_task) for task in tasks}  # and unknown tasks
    settings = compare_settings(lmm, variants, base, test_per_task, icl_shots, max_new_tokens, mtv_steps, mtv_extras)
    if out is not None:
        prepare_compare_folder(out, settings, recompute)
    configs = [variant_config(name, base) for name in variants]
    extras = (
        ["cont"] * any(c.continuation for c in configs)  # MTV + continuation vectors
        + ["auto"] * any(c.schedule_items for c in configs)  # MTV's schedule chosen on training answers
        + sorted({c.objective for c in configs} - {"log_prob"})  # MTV searched under a variant's objective
        + sorted({f"shift_{c.objective}" for c in configs if c.shift_arm})  # ... with the shift arm's vectors
    )
    fitted_extras = extras if mtv_extras else []  # MTV made to match the variants' own extras, or MTV alone
    recheck = max((c.final_recheck for c in configs), default=0)  # MTV's selection as the variants'
    per_unit = len(variants) + 5 + len(fitted_extras)  # + zero-shot, icl, mtv at both schedules, lora, the extras
    units = [(task, seed) for task in tasks for seed in seeds]
    bar = tqdm(total=len(units) * per_unit, desc="compare", disable=not progress)
    result: dict = {"rows": [], "base": asdict(base), "tasks": list(tasks), "seeds": list(seeds)}
    result.update(model=settings["model"], settings=settings)
    for done, (task, seed) in enumerate(units, 1):
        train, test, template = task_data[task]
        data = unit_data(train, test)
        stored = stored_unit(out, task, seed, data) if out is not None else None
        rows = stored["rows"] if stored is not None else None
        if rows is None:
            mtv_base = replace(base, steps=mtv_steps or base.steps)
            args = (variants, base, mtv_base, fitted_extras, recheck, icl_shots, max_new_tokens, bar)
            rows = _compare_unit(lmm, task, seed, task_data[task], *args)
            if out is not None:
                atomic_write_json(unit_path(out, task, seed), {"task": task, "seed": seed, "data": data, "rows": rows})
        else:
            bar.update(per_unit)
        result["rows"] += rows
        if out is not None:
            write_compare({**result, "units": [done, len(units)]}, out)
    bar.close()
    return result


def _compare_unit(
    lmm, task, seed, data, variants, base, mtv_base, mtv_extras, recheck, icl_shots, max_new_tokens, bar
) -> list[dict]:
    """The rows of one (task, seed): ICL, MTV on the shared scan, then every variant on it."""
    train, test, template = data
    rows: list[dict] = []

    def add(method, vectors=None, shots=0, policy=None, fit_s=0.0, cost=None):
        start = time.perf_counter()
        first, exact = generation_accuracy(
            lmm, test, template, train, shots, vectors, seed=seed, max_new_tokens=max_new_tokens, policy=policy
        )
        row = {"task": task, "seed": seed, "method": method, "first_token": first, "exact_match": exact}
        row.update(eval_s=round(time.perf_counter() - start, 1), policy=policy or "")
        if vectors is not None:  # a fit: its cost (zero-shot and ICL fit nothing)
            row.update(fit_s=round(fit_s, 1), **stored_numbers(vectors))
        rows.append({**row, **(cost or {})})  # policy: as evaluated
        bar.set_postfix(task=task, seed=seed, method=method)
        bar.update(1)

    add("zero_shot")
    add(f"icl_{icl_shots}", shots=icl_shots)
    with measured(lmm.device) as scan_cost:
        pairs = scan_pairs(train, template, base.pairs, base.shots, np.random.default_rng(seed))
        scan = sensitivity_scan(lmm, pairs, base.batch_size, progress=False)
    scan_s = scan_cost.seconds
    forward_only = {"peak_mb": round(scan_cost.peak_mb), "backward": needs_backward("mtv", mtv_base)}
    for method, vectors, policy, seconds in _mtv_fits(lmm, train, template, scan, mtv_base, seed, mtv_extras, recheck):
        add(method, vectors, policy=policy, fit_s=scan_s + seconds, cost=forward_only)
    with measured(lmm.device) as cost:
        adapter = fit_lora(lmm, train, LoRAConfig(seed=seed), task=template, progress=False)
    add(
        "lora",
        adapter,
        fit_s=cost.seconds,
        cost={"peak_mb": round(cost.peak_mb), "backward": needs_backward("lora", None)},
    )
    heads = lmm.heads.num_layers * lmm.heads.num_heads
    for name in variants:
        with measured(lmm.device) as cost:
            vectors, seconds = fit_variant(lmm, train, template, scan, name, base, seed)
        config = variant_config(name, base)
        scanned = config.needs_scan(heads)  # a variant that reads no scan is not charged for it
        peak = max(cost.peak_mb, scan_cost.peak_mb if scanned else 0)
        add(
            name,
            vectors,
            policy=vectors.config.policy,
            fit_s=scan_s * scanned + seconds,
            cost={"peak_mb": round(peak), "backward": needs_backward("stv", config)},
        )
        rows[-1].update(fit_choices(vectors))
    return rows


def compare_settings(
    lmm,
    variants: Sequence[str],
    base: STVConfig,
    test_per_task: int,
    icl_shots: int,
    max_new_tokens: int,
    mtv_steps: int = 0,
    mtv_extras: bool = True,
) -> dict:
    """What every row of a compare folder depends on, besides its (task, seed) (``lmm``
    None: all but the model, what can be checked before it loads)."""
    from ..version import stv_version

    model = {} if lmm is None else model_identity(lmm)
    return {
        "kind": "compare",
        **model,
        "variants": variant_settings(variants, base),
        "base": asdict(base),
        "test_per_task": test_per_task,
        "icl_shots": icl_shots,
        "max_new_tokens": max_new_tokens,
        "mtv_steps": mtv_steps or base.steps,
        **({} if mtv_extras else {"mtv_extras": False}),  # absent: on (folders written before the switch)
        "lora": asdict(LoRAConfig()),  # its seed is the unit's
        "stv_version": stv_version(),
    }


def prepare_compare_folder(out: str | Path, settings: dict, recompute: bool) -> None:
    """Record ``settings`` in ``out`` (cleared first with ``recompute``), or refuse other ones
    (settings without a model: checked only, before the model loads)."""
    outputs = ["units", "compare.json", "compare.md", "front_first_token.png", "front_exact_match.png"]
    prepare_folder(out, settings, recompute, "compare results", outputs)


def _mtv_fits(
    lmm, train, template, scan: ScanResult, base: STVConfig, seed: int, extras: Sequence[str], recheck: int = 0
):
    """(method, vectors, policy, fit seconds after the scan) of MTV on the scan's means at both
    schedules, then each of ``extras``: "cont" (+ continuation vectors), "auto" (schedule chosen
    on training answers), or an objective ("hits", "margin": MTV searched under it, its masks
    re-scored on ``recheck`` more queries when > 0, as the variants' final selection), or
    "shift_" + an objective (the same, the kept heads steered by the scan's mean deltas)."""
    config = MTVConfig(
        prompts=base.pairs,
        shots=base.shots,
        steps=base.steps,
        samples=base.samples,
        queries_per_step=2,
        final_items=20,
        seed=seed,
    )
    start = time.perf_counter()
    means = scan.mean_activations()  # (L*H, D) once: every MTV search below starts from them
    mtv = fit_mtv(lmm, train, config, task=template, progress=False, means=means)
    seconds = time.perf_counter() - start
    fits = [("mtv", mtv, "every_step", seconds), ("mtv_prompt_last", mtv, "prompt_last", seconds)]
    for extra in extras:
        start, built_on = time.perf_counter(), seconds  # cont and auto build on the MTV fit
        if extra == "cont":
            args = (VARIANTS["stv+_cont"].settings["continuation"], base.pairs, base.shots, base.batch_size, seed)
            vectors, policy = with_continuation(mtv, lmm, train, template, *args), "prompt_last"
        elif extra == "auto":
            vectors = choose_schedule(
                lmm, mtv, train, template, STVConfig.plus().schedule_items, np.random.default_rng(seed + 2_000)
            )
            policy = vectors.config.policy
        else:  # an objective: a search of its own on the same means (or shifts)
            objective, shifts = extra.removeprefix("shift_"), scan.mean_shift if extra.startswith("shift_") else None
            other = replace(config, objective=cast(Objective, objective), final_recheck=recheck)
            vectors = fit_mtv(lmm, train, other, task=template, progress=False, means=means, shifts=shifts)
            policy, built_on = "prompt_last", 0.0
            extra += "_recheck" * bool(recheck)
        fits.append((f"mtv_{extra}", vectors, policy, built_on + time.perf_counter() - start))
    return fits


def fv_task(task: str, test_per_task: int):
    """(train, held-out queries, template) of a Function Vectors task: the same
    ``test_per_task`` test queries for every method and seed (a fixed draw)."""
    from ..data import load_dataset
    from ..tasks import fixed_subset, task_for

    train, test = load_dataset(f"fv:{task}", split="train"), load_dataset(f"fv:{task}", split="test")
    return train, fixed_subset(test, test_per_task), task_for(train)


def compare_table(result: dict, metric: str) -> str:
    """Markdown: method x task, mean ± std over seeds, the average, then the cost columns."""
    rows, tasks = result["rows"], result["tasks"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = ["method", *tasks, "average", *COST_HEADER]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for m in methods:
        cells, means = [], []
        mine = [r for r in rows if r["method"] == m]
        for t in tasks:
            values = [r[metric] for r in mine if r["task"] == t]
            if not values:  # a partial result: no seed of this task finished yet
                cells.append("-")
                continue
            means.append(np.mean(values))
            cells.append(f"{np.mean(values):.1f}" + (f" ± {np.std(values):.1f}" if len(values) > 1 else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean(means):.1f} |" + cost_cells(cost_summary(mine)))
    return "\n".join(lines)


def write_compare(result: dict, out: str | Path) -> Path:
    """Write ``compare.json`` and ``compare.md`` (both metrics) into ``out`` atomically; a
    result with ``units`` [done, total] short of the total is labelled partial in both."""
    out = Path(out)
    done, total = result.get("units", (1, 1))
    partial = f"**partial: {done} of {total} (task, seed) units**\n\n" if done < total else ""
    atomic_write_json(out / "compare.json", {**result, "partial": done < total})
    text = "\n\n".join(
        f"## {m.replace('_', ' ')} (%)\n\n{compare_table(result, m)}" for m in ("first_token", "exact_match")
    )
    rows = result["rows"]
    for metric in ("first_token", "exact_match"):
        points = {
            m: (
                float(np.mean([r.get("fit_s", 0.0) for r in rows if r["method"] == m])),
                float(np.mean([r[metric] for r in rows if r["method"] == m])),
            )
            for m in dict.fromkeys(r["method"] for r in rows)
        }
        title = f"{result.get('model', '')}: {metric.replace('_', ' ')} against fit time (mean over units)"
        cost_front(points, out / f"front_{metric}.png", title, metric.replace("_", " "))
    return atomic_write_text(out / "compare.md", partial + text + "\n")
