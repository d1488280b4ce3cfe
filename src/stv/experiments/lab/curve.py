"""The lab model's ICL curve: accuracy on test digits vs number of demonstrations."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ...data import load_dataset
from ...data.digits import DIGIT_TASKS, digit_examples
from ...evaluate import first_token_accuracy
from ...io import atomic_write_json
from ...tasks import DIGITS, fixed_subset

SHOTS = (0, 1, 2, 4, 8, 16, 32)


def lab_tasks(kind: str) -> list[str]:
    """Every task of a lab kind."""
    from ...data.digits import NUMBER_TASKS
    from ...data.fashion import FASHION_TASKS

    return list(
        FASHION_TASKS if kind.startswith("fashion") else NUMBER_TASKS if kind.startswith("numbers") else DIGIT_TASKS
    )


def lab_answer_tokens(kind: str) -> int:
    """Tokens generated for exact match: enough for the longest answer and its line break
    ("T-SHIRT" is 5 of SmolLM2's tokens; a digit's word at most 3)."""
    return 8 if kind.startswith("fashion") else 4


def test_subset(task: str, n: int, seed: int = 0, kind: str = "digits"):
    """A fixed, seeded draw of ``n`` test examples of a lab task."""
    return fixed_subset(load_dataset(f"{kind}:{task}", split="test"), n, seed)


def icl_curve(
    lmm,
    shots: Sequence[int] = SHOTS,
    per_task: int = 200,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """{"tasks": {task: {shots: %}}, "average": {shots: %}, "kind_average": {...}} (whole-vocabulary accuracy)."""
    tasks = list(tasks or DIGIT_TASKS)
    table: dict[str, dict[str, float]] = {}
    for task in tasks:
        pool, queries = digit_examples(task, "train"), test_subset(task, per_task, seed)
        table[task] = {
            str(k): round(
                first_token_accuracy(
                    lmm, queries, DIGITS, pool, k, seed=seed + k, progress=progress, desc=f"{task} {k}-shot"
                ),
                2,
            )
            for k in shots
        }
    avg = lambda names: {str(k): round(float(np.mean([table[t][str(k)] for t in names])), 2) for k in shots}  # noqa
    kinds = {kind: [t for t in tasks if DIGIT_TASKS[t].kind == kind] for kind in ("format", "mapping")}
    return {
        "metric": "first-token accuracy over the whole vocabulary, %",
        "per_task": per_task,
        "tasks": table,
        "average": avg(tasks),
        "kind_average": {k: avg(v) for k, v in kinds.items() if v},
    }


NUMBER_SHOTS = (0, 1, 4, 10, 16)


def number_curve(
    lmm,
    kind: str = "numbers",
    shots: Sequence[int] = NUMBER_SHOTS,
    per_task: int = 60,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """A SmolLM2 lab's curve: {"tasks": {task: {shots: {"first_token", "exact_match"}}}} on
    ``numbers`` / ``fashion`` (images) or ``numbers-text`` / ``fashion-text`` (the same
    records with the digit or the class name written as text)."""
    from ...evaluate import generation_accuracy
    from ...tasks import task_for

    tasks = list(tasks or lab_tasks(kind))
    table: dict[str, dict] = {}
    bar = tqdm(total=len(tasks) * len(shots), desc=f"{kind} curve", disable=not progress)
    for name in tasks:
        pool, queries = load_dataset(f"{kind}:{name}", split="train"), test_subset(name, per_task, seed, kind)
        table[name] = {}
        for k in shots:
            first, exact = generation_accuracy(
                lmm, queries, task_for(kind), pool, k, seed=seed + k, max_new_tokens=lab_answer_tokens(kind)
            )
            table[name][str(k)] = {"first_token": round(first, 2), "exact_match": round(exact, 2)}
            bar.update(1)
    bar.close()
    return {"kind": kind, "per_task": per_task, "seed": seed, "tasks": table}


def format_number_curve(curve: dict) -> str:
    """Markdown: task x shots, "first token / exact match" in each cell."""
    shots = list(next(iter(curve["tasks"].values())))
    lines = ["| task | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    for name, row in curve["tasks"].items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{row[k]['first_token']:.0f} / {row[k]['exact_match']:.0f}" for k in shots)
            + " |"
        )
    return "\n".join(lines)


def format_curve(curve: dict) -> str:
    """The lab's ICL curve as a markdown table."""
    shots = list(curve["average"])
    lines = ["| task | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    rows = list(curve["tasks"].items()) + [(f"**{k} avg**", v) for k, v in curve["kind_average"].items()]
    rows.append(("**average**", curve["average"]))
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in shots) + " |")
    return "\n".join(lines)


def save_curve(curve: dict, directory: str | Path) -> None:
    """Write the ICL curve JSON next to the checkpoint."""
    atomic_write_json(Path(directory) / "icl_curve.json", curve)
