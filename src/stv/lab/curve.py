"""The lab model's ICL curve: accuracy on test digits vs number of demonstrations."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.digits import DIGIT_TASKS, digit_examples
from ..evaluate import first_token_accuracy
from ..io import atomic_write_json
from ..tasks import DIGITS

SHOTS = (0, 1, 2, 4, 8, 16, 32)


def test_subset(task: str, n: int, seed: int = 0):
    examples = digit_examples(task, "test")
    idx = np.random.default_rng(seed).permutation(len(examples))[:n]
    return [examples[i] for i in sorted(idx)]


def icl_curve(lmm, shots: Sequence[int] = SHOTS, per_task: int = 200, tasks: Sequence[str] | None = None,
              seed: int = 0, progress: bool = True) -> dict:
    """{"tasks": {task: {shots: %}}, "average": {shots: %}, "kind_average": {...}} (whole-vocabulary accuracy)."""
    tasks = list(tasks or DIGIT_TASKS)
    table: dict[str, dict[str, float]] = {}
    for task in tasks:
        pool, queries = digit_examples(task, "train"), test_subset(task, per_task, seed)
        table[task] = {str(k): round(first_token_accuracy(lmm, queries, DIGITS, pool, k, seed=seed + k,
                                                          progress=progress, desc=f"{task} {k}-shot"), 2)
                       for k in shots}
    avg = lambda names: {str(k): round(float(np.mean([table[t][str(k)] for t in names])), 2) for k in shots}  # noqa
    kinds = {kind: [t for t in tasks if DIGIT_TASKS[t].kind == kind] for kind in ("format", "mapping")}
    return {"metric": "first-token accuracy over the whole vocabulary, %", "per_task": per_task, "tasks": table,
            "average": avg(tasks), "kind_average": {k: avg(v) for k, v in kinds.items() if v}}


def format_curve(curve: dict) -> str:
    shots = list(curve["average"])
    lines = ["| task | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    rows = list(curve["tasks"].items()) + [(f"**{k} avg**", v) for k, v in curve["kind_average"].items()]
    rows.append(("**average**", curve["average"]))
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in shots) + " |")
    return "\n".join(lines)


def save_curve(curve: dict, directory: str | Path) -> None:
    atomic_write_json(Path(directory) / "icl_curve.json", curve)
