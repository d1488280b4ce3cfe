"""`stv demo`: the whole pipeline, side by side, over several seeds.

Two subjects: the bundled lab model on digits tasks (default; first-token accuracy), and a
real pretrained language model (``--model smollm2-135m``) on Function Vectors text tasks
(first-token accuracy and exact match of the generated answer). Zero-shot, k-shot ICL, MTV,
STV (the paper's ranking and our alternatives) and the paper's ablations; a table of
mean ± std, results.json, report.md and plots.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Policy
from ..errors import StvError
from ..evaluate import first_token_accuracy, generation_accuracy
from ..io import atomic_write_json
from ..methods.ablations import mean_at_top_k, nearest_to_mean, random_heads
from ..methods.fit import STVConfig, fit
from ..methods.lora import LoRAConfig, fit_lora
from ..methods.mtv import MTVConfig, fit_mtv
from ..runs.costs import measured, needs_backward, stored_numbers
from ..runs.fingerprint import (
    SETTINGS_NAME,
    model_identity,
    model_label,
    prepare_folder,
    stored_unit,
    unit_data,
    unit_path,
)
from ..runs.folder import save_fit
from ..tasks import task_for
from .compare import fit_choices, fit_variant, fv_task
from .demo_jobs import default_jobs, run_units
from .demo_report import write_results
from .lab.curve import lab_answer_tokens
from .variants import variant_config, variant_settings

ABLATIONS = ("stv_mean_topk", "stv_random_heads", "stv_no_rl")
# Seconds per (task, seed) in one process with one torch thread, for the estimate printed
# before a run (in rounds of the processes that run side by side). The lab: 15.7 s a unit, 12
# units in two processes in 94 s, nothing else on the 2 cores (benchmarks/demo-lab-v10).
# lab-smollm2: 374 s a unit with another run on the other core (benchmarks/demo-lab-smollm2-cost).
# SmolLM2: 462 s a unit, 15 units in two processes in 3,629 s, nothing else on the cores
# (benchmarks/demo-smollm2-v10). lab-dino: 565 s a unit, 9 units in two processes in
# 2,847 s, nothing else on the cores but a 1-thread curve for the last 6 min (benchmarks/demo-lab-dino).
MEASURED_SECONDS = {"lab": 16.0, "real": 462.0, "numbers": 374.0, "fashion": 565.0}


def variant_method(name: str) -> str:
    """Method name of a variant in tables: "stv+" stays, "mean_delta" -> "stv_mean_delta"."""
    return name if name.startswith("stv") else f"stv_{name}"


@dataclass
class DemoConfig:
    """What ``stv demo`` runs: model, tasks, seeds, sizes and the STV / MTV settings."""

    model: str | None = None  # None: the bundled lab model
    tasks: tuple[str, ...] = ("parity_word", "size_word", "parity_AB", "big_AB")
    seeds: tuple[int, ...] = (0, 1, 2)
    test_per_task: int = 200
    icl_shots: tuple[int, ...] = (1, 4, 16, 32)
    max_new_tokens: int = 0  # >0: also generate and report exact match (text tasks)
    em_policy: Policy = "prompt_last"  # insertion schedule while generating for exact match
    variants: tuple[str, ...] = ("forward", "fast")  # stv.experiments.variants.VARIANTS, fitted on the same scan
    mtv_means_from_scan: bool = False  # MTV's mean activations = the mean of the scan's (same prompts)
    is_quick: bool = False  # the --quick sizes (recorded so report.md can say how to reproduce it)
    # top_k 0: each method's default for the model (config.default_top_k): the paper's STV a
    # quarter of the heads (8 of the lab's 16, 64 of SmolLM2's 270), stv+ every head.
    stv: STVConfig = field(
        default_factory=lambda: STVConfig.paper(
            top_k=0, clusters=16, pairs=100, shots=16, steps=150, samples=32, queries_per_step=2, batch_size=25
        )
    )
    mtv: MTVConfig = field(
        default_factory=lambda: MTVConfig(
            prompts=100, shots=16, steps=150, samples=32, queries_per_step=2, batch_size=25
        )
    )
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # the fixed defaults; seeded by the unit's seed

    @property
    def subject(self) -> str:
        """lab (the from-scratch lab on digits), numbers (lab-smollm2 on digit images), fashion
        (lab-dino on Fashion-MNIST), real (fv text tasks)."""
        return "lab" if self.model is None else IMAGE_LABS.get(self.model, "real")

    def methods(self) -> list[str]:
        """Row names of the results table, in order."""
        return [
            "zero_shot",
            *(f"icl_{k}" for k in self.icl_shots),
            "mtv",
            "lora",
            "stv",
            *ABLATIONS,
            *map(variant_method, self.variants),
        ]

    @classmethod
    def quick(cls) -> "DemoConfig":
        """The ``--quick`` demo: 2 lab tasks, 1 seed, smaller fits."""
        return cls(
            is_quick=True,
            tasks=("parity_word", "parity_AB"),
            seeds=(0,),
            test_per_task=100,
            stv=STVConfig.paper(
                top_k=0, clusters=8, pairs=40, shots=16, steps=100, samples=16, queries_per_step=2, batch_size=20
            ),
            mtv=MTVConfig(prompts=40, shots=16, steps=100, samples=16, queries_per_step=2, batch_size=20),
        )

    @classmethod
    def real(cls, model: str = "smollm2-135m", quick: bool = False) -> "DemoConfig":
        """A real pretrained LM on five Function Vectors tasks (bundled), 10-shot contexts."""
        # top_k 0: the paper's STV gets 64 of SmolLM2's 270 heads (the paper's K), stv+ all 270
        # (more heads helped stv+ at every step measured: benchmarks/compare2-smollm2, smol-k).
        stv = STVConfig.paper(
            top_k=0,
            clusters=16,
            pairs=40,
            shots=10,
            steps=80,
            samples=32,
            queries_per_step=2,
            prefix_pool=8,
            batch_size=8,
        )
        mtv = MTVConfig(prompts=40, shots=10, steps=80, samples=32, queries_per_step=2, final_items=20, batch_size=8)
        config = cls(
            model=model,
            tasks=("capitalize", "lowercase_first_letter", "present-past", "choose_first_of_5", "country-capital"),
            test_per_task=30,
            icl_shots=(1, 4, 10),
            max_new_tokens=8,
            variants=("forward", "fast"),
            mtv_means_from_scan=True,
            stv=stv,
            mtv=mtv,
        )
        if model in IMAGE_LABS:  # images; the tasks SmolLM2 learns in context from them
            kind = IMAGE_LABS[model]
            config = replace(config, tasks=LAB_TASKS[kind], max_new_tokens=lab_answer_tokens(kind))
        if quick:
            config = replace(
                config,
                is_quick=True,
                tasks=config.tasks[:2],
                seeds=(0,),
                test_per_task=20,
                stv=replace(stv, pairs=16, steps=40),
                mtv=replace(mtv, prompts=16, steps=40),
            )
        return config


IMAGE_LABS = {"lab-smollm2": "numbers", "lab-dino": "fashion"}  # model -> the kind of its image tasks
# the tasks where 10-shot ICL on images reaches 70% (first token): numbers:TASK on lab-smollm2,
# fashion:TASK on lab-dino (docs/research-log.md)
LAB_TASKS = {"numbers": ("word", "size", "copy", "word_caps"), "fashion": ("name", "category", "name_title")}
METHODS = tuple(DemoConfig().methods())  # the default (lab) demo's


def _data(config: DemoConfig, task: str):
    """(train, test, template) of one demo task."""
    from ..data import load_dataset
    from .lab.curve import test_subset

    if config.subject == "real":
        return fv_task(task, config.test_per_task)
    kind = "digits" if config.subject == "lab" else config.subject
    train = load_dataset(f"{kind}:{task}", split="train")
    return train, test_subset(task, config.test_per_task, kind=kind), task_for(kind)


def _load(config: DemoConfig, checkpoint=None):
    if config.subject == "lab":
        from .lab.model import load_lab

        return load_lab(checkpoint)
    from ..models import load_model

    assert config.model is not None  # subject != "lab"
    return load_model(config.model)


DEMO_OUTPUTS = ("units", "vectors", "results.json", "report.md", "*.png")  # what --recompute clears


def demo_settings(lmm, config: DemoConfig) -> dict:
    """What every (task, seed) unit of a demo folder depends on besides its task and seed
    (``lmm`` None: all but the model, what can be checked before it loads)."""
    from ..version import stv_version

    model = {} if lmm is None else model_identity(lmm)
    kept = {k: v for k, v in asdict(config).items() if k not in ("tasks", "seeds")}  # units are independent
    variants = variant_settings(config.variants, config.stv)
    return {"kind": "demo", **model, "config": kept, "variants": variants, "stv_version": stv_version()}


def run_demo(
    out: str | Path = "runs/demo",
    config: DemoConfig | None = None,
    checkpoint=None,
    progress: bool = True,
    recompute: bool = False,
    report_only: bool = False,
    jobs: int = 0,
) -> dict:
    """Every method on every task and seed; writes results.json, report.md and plots into ``out``.
    ``jobs``: (task, seed) units run side by side in worker processes (0: :func:`default_jobs`).

    Each finished (task, seed) is kept in ``out/units/`` and the results are rewritten
    (labelled partial until the last unit): a killed run loses one unit at most, a rerun
    with the same settings picks up the units there (another seed list too, so seeds can run
    in separate processes), and a folder holding other settings is refused (``recompute``:
    cleared first). ``report_only``: no model, nothing computed; the results and report are
    rewritten from the units already in ``out``."""
    config = config or DemoConfig()
    out = Path(out)
    # each task's (train, test, template), read before anything is written: bad data leaves no output
    datasets = {} if report_only else {task: _data(config, task) for task in config.tasks}
    prepare_folder(out, demo_settings(None, config), recompute, "demo results", DEMO_OUTPUTS)
    if report_only:
        return _report_only(out, config)
    torch.manual_seed(0)
    lmm = _load(config, checkpoint)
    prepare_folder(out, demo_settings(lmm, config), recompute, "demo results", DEMO_OUTPUTS)
    model = model_label(str(lmm.name))
    methods = config.methods()
    start = time.perf_counter()
    estimate = MEASURED_SECONDS[config.subject]  # a unit's seconds
    units: dict[tuple[str, int], dict] = {}
    pending = []
    for task in config.tasks:
        data = unit_data(*datasets[task][:2])
        for seed in config.seeds:
            unit = stored_unit(out, task, seed, data)
            if unit is None:
                pending.append((task, seed, data))
            else:
                units[(task, seed)] = unit
    jobs = jobs or default_jobs(config, len(pending))
    if progress:
        print(
            f"stv demo: {len(config.tasks)} tasks x {len(config.seeds)} seeds x {len(methods)} methods, "
            f"{len(pending)} (task, seed) to run in {jobs} process(es); about "
            f"{estimate * math.ceil(len(pending) / max(1, min(jobs, 2))) / 60:.0f} min on 2 CPU cores",
            file=sys.stderr,
        )
    bar = tqdm(total=len(config.tasks) * len(config.seeds) * len(methods), desc="demo", disable=not progress)
    bar.update(len(methods) * len(units))
    steps = (_load, _data, _run_unit)
    for (task, seed, data), unit in run_units(steps, lmm, config, checkpoint, out, pending, datasets, jobs, bar):
        units[(task, seed)] = {"task": task, "seed": seed, "data": data, **unit}
        atomic_write_json(unit_path(out, task, seed), units[(task, seed)])
        write_results(out, config, model, units, time.perf_counter() - start, redraw=[task])
    bar.close()
    ordered = {(t, s): units[(t, s)] for t in config.tasks for s in config.seeds if (t, s) in units}
    return write_results(out, config, model, ordered, time.perf_counter() - start)


def _report_only(out: Path, config: DemoConfig) -> dict:
    """results.json, report.md and plots from the units in ``out`` (checked against the
    current data), in task and seed order; an error if it holds none."""
    settings = out / SETTINGS_NAME
    if not settings.is_file():
        raise StvError(f"{out} holds no demo results ({SETTINGS_NAME} missing); run `stv demo --out {out}` first")
    units = {}
    for task in config.tasks:
        train, test, _ = _data(config, task)
        data = unit_data(train, test)
        for seed in config.seeds:
            unit = stored_unit(out, task, seed, data)
            if unit is not None:
                units[(task, seed)] = unit
    if not units:
        raise StvError(f"{out} holds no finished (task, seed) unit of seeds {list(config.seeds)}; nothing to report")
    return write_results(out, config, json.loads(settings.read_text())["model"], units, 0.0)


def _measure(lmm, config: DemoConfig, test, template, train, shots: int, vectors, seed: int) -> list[float]:
    if not config.max_new_tokens:
        return [first_token_accuracy(lmm, test, template, train, shots, vectors, seed=seed)]
    return list(
        generation_accuracy(
            lmm,
            test,
            template,
            train,
            shots,
            vectors,
            seed=seed,
            max_new_tokens=config.max_new_tokens,
            policy=config.em_policy,
        )
    )


def _run_unit(lmm, config: DemoConfig, data, seed: int, vectors_folder: Path, bar) -> dict:
    """Every method on one (task, seed): {"scores": {method: [first token, (exact match)]},
    "timings", "top_k", "fits" (each variant's schedule, arms and refinement: which start won,
    its held-out scores), "plot" (the paper STV's scan and search), "wall_s"}; the paper STV's
    vectors are saved in ``vectors_folder``."""
    train, test, template = data
    started = time.perf_counter()
    scores: dict[str, list[float]] = {}
    timings: dict[str, float] = {}
    top_k: dict[str, int] = {}
    fits: dict[str, dict] = {}

    costs: dict[str, dict] = {}

    def record(method: str, shots: int = 0, vectors=None) -> None:
        start = time.perf_counter()
        scores[method] = [round(v, 2) for v in _measure(lmm, config, test, template, train, shots, vectors, seed)]
        costs.setdefault(method, {})["eval_s"] = round(time.perf_counter() - start, 2)
        if vectors is not None:
            costs[method]["used"] = stored_numbers(vectors)["used"]
        bar.set_postfix(seed=seed, method=method)
        bar.update(1)

    def cost(method: str, measured_cost, kind: str, fitted_with) -> None:
        backward = needs_backward(kind, fitted_with)
        costs[method] = {
            "fit_s": round(measured_cost.seconds, 2),
            "peak_mb": round(measured_cost.peak_mb),
            "backward": backward,
        }

    record("zero_shot")
    for k in config.icl_shots:
        record(f"icl_{k}", shots=k)
    stv_cfg = replace(config.stv, seed=seed).resolved(lmm)
    with measured(lmm.device) as spent:
        vectors = fit(lmm, train, stv_cfg, task=template, progress=False)
        state = vectors.log
    cost("stv", spent, "stv", stv_cfg)
    timings.update({f"stv_{stage}": seconds for stage, seconds in state.timings.items()})
    top_k["stv"] = stv_cfg.top_k
    save_fit(vectors_folder, vectors, stv_cfg)
    means = state.scan.mean_activations() if config.mtv_means_from_scan else None
    with measured(lmm.device) as spent:
        mtv_vectors = fit_mtv(lmm, train, replace(config.mtv, seed=seed), task=template, progress=False, means=means)
        mtv_log = mtv_vectors.log
    cost("mtv", spent, "mtv", config.mtv)  # with means from the scan: the scan's time is in stv's
    timings.update({f"mtv_{stage}": seconds for stage, seconds in mtv_log.timings.items()})
    record("mtv", vectors=mtv_vectors)
    with measured(lmm.device) as spent:
        adapter = fit_lora(lmm, train, replace(config.lora, seed=seed), task=template, progress=False)
        lora_log = adapter.log
    cost("lora", spent, "lora", config.lora)
    timings["lora_train"] = lora_log["train"]
    record("lora", vectors=adapter)
    record("stv", vectors=vectors)
    record("stv_mean_topk", vectors=mean_at_top_k(state, vectors.config))
    record("stv_random_heads", vectors=random_heads(lmm, train, stv_cfg, template, state, seed))
    record("stv_no_rl", vectors=nearest_to_mean(state, vectors.config))
    for name in config.variants:
        # the unresolved settings: a variant with top_k 0 takes its own preset's K
        variant = variant_config(name, config.stv)
        with measured(lmm.device) as spent:
            fitted, seconds = fit_variant(lmm, train, template, state.scan, name, replace(config.stv, seed=seed), seed)
        if variant.needs_scan(lmm.heads.num_layers * lmm.heads.num_heads):
            spent.seconds += state.timings["scan"]  # the shared scan is part of its cost
        cost(variant_method(name), spent, "stv", variant)
        timings[f"{variant_method(name)}_fit"] = seconds
        top_k[variant_method(name)] = fitted.config.hyperparameters["top_k"]
        fits[variant_method(name)] = fit_choices(fitted)
        record(variant_method(name), vectors=fitted)
    assert state.search is not None  # the paper's STV runs REINFORCE
    plot = {
        "sensitivity": state.scan.scores(config.stv.sensitivity).tolist(),  # (layers, heads)
        "locations": [list(location) for location in state.locations],
        "reward_curve": list(state.search.reward_curve),
        "max_prob_curve": list(state.search.max_prob_curve),
    }
    return {
        "scores": scores,
        "timings": timings,
        "top_k": top_k,
        "fits": fits,
        "costs": costs,
        "plot": plot,
        "wall_s": time.perf_counter() - started,
    }
