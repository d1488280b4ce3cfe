"""The demo's (task, seed) units, one after another or in worker processes.

Every unit is seeded on its own (its draws, k-means, LoRA's initial weights), so a unit
computes the same numbers in a worker as in the main process. A worker is a process with one
torch thread that loads the model once and runs the units it is given.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:
    from .demo import DemoConfig

Pending = tuple[str, int, dict]  # task, seed, the unit's data fingerprint


# how the demo runs a unit: (load(config, checkpoint) -> lmm, data(config, task) -> (train, test,
# template), unit(lmm, config, data, seed, vectors_folder, bar) -> dict); module-level functions,
# so a worker process can receive them
Steps = tuple[Callable, Callable, Callable]


def default_jobs(config: DemoConfig, pending: int) -> int:
    """Worker processes when none are asked for: one per core (at most 4) on the lab models,
    which are small; one on a real model, whose every copy takes gigabytes."""
    if config.subject == "real":
        return 1
    return max(1, min(os.cpu_count() or 1, 4, pending))


class _Quiet:
    """Stands in for the progress bar inside a worker (the main process counts whole units)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass


_WORKER: dict[str, Any] = {}


def _start_worker(steps: Steps, config: DemoConfig, checkpoint: Any) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    _WORKER.update(steps=steps, config=config, lmm=steps[0](config, checkpoint))


def _unit_in_worker(task: str, seed: int, out: str) -> dict:
    _, data_of, run_unit = _WORKER["steps"]
    config = _WORKER["config"]
    folder = Path(out) / "vectors" / f"{task}.seed{seed}"
    return run_unit(_WORKER["lmm"], config, data_of(config, task), seed, folder, _Quiet())


def run_units(
    steps: Steps,
    lmm: Any,
    config: DemoConfig,
    checkpoint: Any,
    out: Path,
    pending: Sequence[Pending],
    datasets: dict[str, tuple],
    jobs: int,
    bar: Any,
) -> Iterator[tuple[Pending, dict]]:
    """``(pending unit, its results)`` as each finishes: in this process (``jobs`` 1, with
    ``lmm`` and each task's (train, test, template) from ``datasets``) or in ``jobs`` worker
    processes, each loading its own copy of the model and reading the data itself."""
    run_unit = steps[2]
    if jobs <= 1 or len(pending) <= 1:
        for unit in pending:
            task, seed, _ = unit
            bar.set_description(f"demo {task}")
            yield unit, run_unit(lmm, config, datasets[task], seed, out / "vectors" / f"{task}.seed{seed}", bar)
        return
    context = get_context("spawn")  # a clean interpreter: no fork of torch's threads
    pool = ProcessPoolExecutor(jobs, context, initializer=_start_worker, initargs=(steps, config, checkpoint))
    try:
        futures = {pool.submit(_unit_in_worker, task, seed, str(out)): (task, seed, d) for task, seed, d in pending}
        for future in as_completed(futures):
            yield futures[future], future.result()
            bar.update(len(config.methods()))
    finally:  # an error or Ctrl-C: the units not started are dropped, finished ones are already kept
        pool.shutdown(wait=True, cancel_futures=True)
