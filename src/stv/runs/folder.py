"""Fit into a folder: the artifact, its plots and its log, guarded by the folder's settings.

`stv fit` and the demo both write fits through :func:`save_fit`. :func:`prepare_fit_folder`
makes a folder safe to (re)use: equal settings resume (a finished scan is reused, a finished
artifact is left alone), other settings are refused, ``recompute`` clears what an earlier
fit wrote, settings first.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import report
from .fingerprint import check_settings, clear, data_fingerprint, model_identity, note_written
from ..io import atomic_write_json
from ..methods.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, STV_CONFIG
from ..vectors import CONFIG_NAME, WEIGHTS_NAME
from ..version import stv_version

ADAPTER_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, STV_CONFIG)  # what a LoRA fit writes
FIT_FILES = (
    WEIGHTS_NAME,
    CONFIG_NAME,
    *ADAPTER_FILES,
    "fit_log.json",
    "sensitivity.png",
    "reinforce.png",
    "scan",
    "policy.png",
)  # policy.png: older name

if TYPE_CHECKING:
    from ..methods.log import FitLog


def fit_settings(lmm, train, task, method: str, config, dataset: str | None = None) -> dict:
    """What a fit folder's content depends on."""
    return {
        "kind": "fit",
        "method": method,
        **model_identity(lmm),
        "dataset": dataset or (train[0].metadata.get("dataset") if train else None),
        "data": data_fingerprint(train),
        "task": asdict(task),
        "config": asdict(config),
        "stv_version": stv_version(),
    }


def prepare_fit_folder(folder: str | Path, settings: dict, recompute: bool) -> bool:
    """True when ``folder`` already holds a finished fit under these ``settings``."""
    folder = Path(folder)
    if recompute:
        clear(folder, FIT_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    resumed = check_settings(folder, settings, "task vectors")
    artifacts = ((WEIGHTS_NAME, CONFIG_NAME), ADAPTER_FILES)  # task vectors, or a LoRA adapter
    return resumed and any(all((folder / name).is_file() for name in names) for names in artifacts)


def save_fit(
    folder: str | Path,
    vectors,
    config,
    state: FitLog | None = None,
    started: float | None = None,
    costs: dict | None = None,
    stages: dict[str, float] | None = None,
) -> dict:
    """Write the artifact, plots and ``fit_log.json`` (with ``costs``); returns the log.

    ``state`` is the fit's :class:`~stv.methods.fit.FitLog` (REINFORCE curves; for STV also
    the heatmap of the ranking used and whether the scan was reused)."""
    folder = Path(folder)
    vectors.save_pretrained(folder)
    written = [WEIGHTS_NAME, CONFIG_NAME] if hasattr(vectors, "vectors") else list(ADAPTER_FILES)
    search = state.search if state is not None else None
    timings = state.timings if state is not None else (stages or {})
    log = {
        "method": vectors.config.method,
        "stages_seconds": {k: round(v, 3) for k, v in timings.items()},
        "config": asdict(config),
        "reward_curve": search.reward_curve if search is not None else [],
        "costs": costs or {},
    }
    if started is not None:
        log["total_seconds"] = round(time.perf_counter() - started, 3)
    if state is not None and state.scan_result is not None:
        ranking = config.sensitivity
        log.update({"locations": state.locations, "scan_reused": state.scan.reused, "ranking": ranking})
        written.append("sensitivity.png")
        report.sensitivity_heatmap(
            state.scan.scores(ranking),
            folder / "sensitivity.png",
            marked=state.locations,
            title=f"head sensitivity ({ranking})",
            label=f"{ranking} score",
        )
    if search is not None:
        written.append("reinforce.png")
        title = f"{vectors.config.method.upper()} REINFORCE"
        report.reinforce_curves(search.reward_curve, search.max_prob_curve, folder / "reinforce.png", title=title)
    atomic_write_json(folder / "fit_log.json", log)
    note_written(folder, *written, "fit_log.json")
    return log


def fit_into(
    folder: str | Path,
    lmm,
    train,
    task,
    config,
    method: str = "stv",
    dataset: str | None = None,
    split: str = "train",
    recompute: bool = False,
    lora=None,
) -> dict | None:
    """Fit STV (``config``), MTV (the same sizes) or LoRA (``lora``, a LoRAConfig; its
    defaults when None) into ``folder``; None when the folder already holds a fit with these
    settings. The log records the cost: wall time, peak memory, backward pass, numbers
    stored. Only rank 0 writes under data parallelism."""
    from .. import distributed
    from .costs import measured, needs_backward, stored_numbers
    from ..methods.fit import fit
    from ..methods.lora import LoRAConfig, fit_lora
    from ..methods.mtv import MTVConfig, fit_mtv

    folder = Path(folder)
    method_cfg = config
    if method == "mtv":
        method_cfg = MTVConfig(
            shots=config.shots,
            steps=config.steps,
            samples=config.samples,
            lr=config.lr,
            prompts=config.pairs,
            queries_per_step=config.queries_per_step,
            batch_size=config.batch_size,
            policy=config.policy,
            seed=config.seed,
        )
    elif method == "lora":
        method_cfg = lora or LoRAConfig(seed=config.seed)
    settings = {**fit_settings(lmm, train, task, method, method_cfg, dataset), "split": split}
    dist = distributed.current()
    finished = prepare_fit_folder(folder, settings, recompute) if dist.is_main else False
    dist.barrier()
    if finished:
        return None
    if method == "stv" and dist.is_main and not (folder / "scan").exists():
        note_written(folder, "scan")  # the scan's cache, written as it runs
    start = time.perf_counter()
    state: FitLog | None = None
    timings: dict[str, float] = {}
    vectors: Any  # TaskVectors, or a LoRAAdapter
    with measured(lmm.device) as cost:
        if method == "mtv":
            vectors = fit_mtv(lmm, train, method_cfg, task=task)
            state = vectors.log
        elif method == "lora":
            vectors = fit_lora(lmm, train, method_cfg, task=task)
            timings = vectors.log
        else:
            vectors = fit(lmm, train, config, task=task, workdir=folder / "scan")
            state = vectors.log
    costs = {**cost.as_dict(), "backward": needs_backward(method, method_cfg), **stored_numbers(vectors)}
    log: dict[str, Any] = {"stages_seconds": {}}
    if dist.is_main:
        log = save_fit(folder, vectors, method_cfg, state=state, started=start, costs=costs, stages=timings)
    summary = {"out": str(folder), "method": method, **costs, **log["stages_seconds"]}
    if method == "stv" and state is not None:
        reused = state.scan_result.reused if state.scan_result is not None else None  # None: no scan was needed
        summary.update(variant=config.variant, locations=len(vectors.locations), scan_reused=reused)
    return summary
