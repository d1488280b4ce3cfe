"""Datasets as lists of Example records.

``load_dataset(spec, root, split)`` with spec one of: ``digits:TASK``, ``numbers:TASK`` and
``numbers-text:TASK`` (bundled, offline; the last two for the SmolLM2 lab),
``fashion:TASK`` and ``fashion-text:TASK`` (Fashion-MNIST's IDX files, for lab-dino),
``vizwiz``, ``okvqa``, ``dtd``, ``flowers102``, ``cub`` (original files under ``root``),
``hf:NAME`` (the Hugging Face parquet repo of NAME), ``jsonl`` (root = the .jsonl file) or
``mtv:KIND:FILE`` (MTV's 2-way records, images under ``root``; KIND = flower, bird or texture)
or ``fv:TASK`` (a Function Vectors text task: a file, a name under ``root``, or a bundled one).
"""

from __future__ import annotations

from pathlib import Path

from .digits import DIGIT_TASKS, DigitImages, DigitTask, digit_examples, digit_images
from .example import DataError, Example, LazyImage
from .function_vectors import bundled_tasks, load_function_vectors
from .loaders import LOADERS, load_hf, load_jsonl, load_mtv_choice

__all__ = [
    "DIGIT_TASKS",
    "bundled_tasks",
    "load_function_vectors",
    "DataError",
    "DigitImages",
    "DigitTask",
    "Example",
    "LazyImage",
    "digit_examples",
    "digit_images",
    "load_dataset",
]


def load_dataset(spec: str, root: str | Path | None = None, split: str = "train") -> list[Example]:
    """Examples of ``spec``; each remembers its spec in ``metadata["dataset"]`` so the right
    prompt template can be found for it (``stv.tasks.task_for``)."""
    examples = _load(spec, root, split)
    if not examples:
        raise DataError(f"dataset {spec!r} has no examples in split {split!r}; check the split name and the files")
    seen: set[str] = set()
    for e in examples:
        if e.id in seen:
            raise DataError(f"dataset {spec!r}: id {e.id!r} appears twice; every record needs its own id")
        if not e.answers or not str(e.answers[0]).strip():
            raise DataError(
                f'dataset {spec!r}: record {e.id!r} has no answer ("answers": [] or missing); fix or drop that record'
            )
        seen.add(e.id)
        e.metadata.setdefault("dataset", spec)
    return examples


def _load(spec: str, root: str | Path | None, split: str) -> list[Example]:
    kind, _, rest = spec.partition(":")
    if kind in ("digits", "numbers", "numbers-text"):
        return digit_examples(rest, split, kind=kind)
    if kind in ("fashion", "fashion-text"):
        from .fashion import fashion_examples

        return fashion_examples(rest, split, kind=kind)
    if kind == "hf":
        return load_hf(rest, split)
    if kind == "fv":
        return load_function_vectors(rest, root, split)
    if kind == "jsonl":
        return load_jsonl(rest or _need_root(spec, root), split=split)
    if kind == "mtv":
        what, _, file = rest.partition(":")
        return load_mtv_choice(file, _need_root(spec, root), what)
    if kind in LOADERS:
        return LOADERS[kind](_need_root(spec, root), split)
    raise DataError(
        f"unknown dataset {spec!r}; use digits:TASK, numbers:TASK, numbers-text:TASK, fashion[-text]:TASK, vizwiz, okvqa, dtd, flowers102, cub, hf:NAME, "
        "jsonl:FILE, mtv:KIND:FILE or fv:TASK"
    )


def _need_root(spec: str, root) -> Path:
    if root is None:
        raise DataError(f"dataset {spec!r} needs --root (the folder holding its original files)")
    return Path(root)
