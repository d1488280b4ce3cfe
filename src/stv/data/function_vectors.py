"""Text in-context-learning tasks in the Function Vectors format (Todd et al., ICLR 2024).

A task file is a JSON list of ``{"input": ..., "output": ...}``. Spec ``fv:PATH``: PATH is a
file, a task name under ``--root`` (searched one folder deep, so the repository's
``abstractive/`` and ``extractive/`` layout works), or the name of a task bundled with stv
(``stv/data/fv``: capitalize, lowercase_first_letter, present-past, choose_first_of_5,
country-capital, next_item, antonym).

Train and test are a fixed split by a hash of the *input* (about 70/30), so the split never
depends on the file's order or size, and one input never lands on both sides:
demonstrations (always drawn from train) can never contain a test query.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from .example import DataError, DataWarning, Example, refuse_constant

BUNDLED = Path(__file__).parent / "fv"
TRAIN_PERCENT = 70
SPLITS = ("train", "test", "all")


def bundled_tasks() -> list[str]:
    """Names of the Function Vectors tasks that ship with the package."""
    return sorted(p.stem for p in BUNDLED.glob("*.json"))


def fv_file(path: str, root: str | Path | None = None) -> Path:
    """The JSON file ``fv:PATH`` names (see the module docstring for the search order)."""
    direct = Path(path)
    if direct.is_file():
        return direct
    name = path if path.endswith(".json") else f"{path}.json"
    if root is not None:
        root = Path(root)
        for candidate in (root / name, *sorted(root.glob(f"*/{name}"))):
            if candidate.is_file():
                return candidate
    if (BUNDLED / name).is_file():
        return BUNDLED / name
    where = f"{direct} is not a file" + (f", and {root} holds no {name}" if root is not None else "")
    raise DataError(f"fv:{path}: {where}; bundled tasks are {', '.join(bundled_tasks())}")


def in_train(text: str) -> bool:
    """The fixed split rule: sha256 of the input, first two bytes mod 100 < 70."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:2], "big") % 100 < TRAIN_PERCENT


def load_function_vectors(path: str, root: str | Path | None = None, split: str = "train") -> list[Example]:
    """Examples of one Function Vectors task file (question = input, answer = output)."""
    if split not in SPLITS:
        raise DataError(f"fv:{path}: split {split!r} must be one of {', '.join(SPLITS)}")
    file = fv_file(path, root)
    try:
        records = json.loads(file.read_text(), parse_constant=refuse_constant)
    except json.JSONDecodeError as err:
        raise DataError(f"{file} is not valid JSON (line {err.lineno}: {err.msg})") from None
    except ValueError as err:
        raise DataError(f"{file}: {err}") from None
    if not isinstance(records, list) or not records:
        raise DataError(f'{file} must be a non-empty JSON list of {{"input", "output"}} records')
    task = file.stem
    out = []
    outputs: dict[str, str] = {}
    conflicts: list[str] = []  # inputs given different outputs (next_item: "I" -> "J" and "II")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("input"), str):
            raise DataError(f"{file} record {i} needs a string 'input' and a string 'output'")
        output = r.get("output")
        if not isinstance(output, str) or not output.strip():
            raise DataError(f"{file} record {i}: 'output' must be a non-empty string, got {json.dumps(output)[:40]}")
        if "\n" in output:
            raise DataError(
                f"{file} record {i}: 'output' {output[:30]!r} has a line break; answers are compared with the "
                "generated first line, so it could never match: put the answer on one line"
            )
        if outputs.setdefault(r["input"], output) != output:
            conflicts.append(f"{r['input'][:20]!r}: {outputs[r['input']][:20]!r} / {output[:20]!r}")
        if split == "all" or in_train(r["input"]) == (split == "train"):
            out.append(
                Example(id=f"{task}-{i}", images=[], question=r["input"], answers=[output], metadata={"task": task})
            )
    if conflicts:
        warnings.warn(
            f"{file}: {len(conflicts)} inputs appear with different outputs ({conflicts[0]}"
            + (", ..." if len(conflicts) > 1 else "")
            + "); each such record is scored against its own output, so these queries cannot all be answered",
            DataWarning,
            stacklevel=2,
        )
    if not out:
        raise DataError(f"{file}: the {split} split is empty ({len(records)} records in the file)")
    return out
