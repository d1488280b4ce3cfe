"""Checks of command-line inputs that need no model, run before one is loaded.

Each raises :class:`~stv.errors.StvError` with one line naming the input and the fix, so a
bad flag costs a second, not a model load, and leaves no partial output behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from .errors import StvError


def writable_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` is (or can become) a folder this process can write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StvError(f"{flag} {path} is a file, not a folder; pass a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StvError(f"{flag} {path}: {existing} is a file, not a folder; pass a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StvError(f"{flag} {path}: no permission to write in {existing}; pass a folder you can write to")
    return path


def at_least(value: int | None, low: int, flag: str) -> None:
    """``value`` (when given) is at least ``low``, else an error naming ``flag``."""
    if value is not None and value < low:
        raise StvError(f"{flag} {value}: must be at least {low}")


def device_available(device: str | None) -> None:
    """``--device`` names a device this machine has, checked before any model loads."""
    if not device or device == "cpu":
        return
    import torch

    kind = device.split(":")[0]
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(kind)
    if available is None:
        raise StvError(f"--device {device}: unknown device; use cpu, cuda, cuda:N or mps")
    if not available:
        raise StvError(f"--device {device}: no {kind} device on this machine; use --device cpu")


def not_a_vectors_folder(path: Path) -> None:
    """Eval never writes its predictions into a folder of fitted task vectors."""
    if (path / "task_vectors.json").is_file() or (path / "stv_adapter.json").is_file():
        raise StvError(
            f"--out {path} holds a fit (task vectors or a LoRA adapter); eval writes its predictions into a folder of its own "
            "(leave --out out for a default one under runs/eval/)"
        )


def slug(text: str) -> str:
    """A folder-name-safe version of a model id, dataset spec or path."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(text).rstrip("/")).strip("_")[-60:] or "x"


def default_eval_folder(
    model: str | None, dataset: str, split: str, shots: int, vectors: str | None, seed: int, policy: str | None
) -> Path:
    """runs/eval/MODEL/DATASET-SPLIT/VECTORS-shotsK-seedS[-POLICY]: every setting that names a
    different result gets a different folder."""
    what = slug(Path(vectors).name) if vectors else "no-vectors"
    tail = f"{what}-shots{shots}-seed{seed}" + (f"-{policy}" if policy else "")
    return Path("runs/eval") / slug(model or "lab") / f"{slug(dataset)}-{slug(split)}" / tail


@contextlib.contextmanager
def removed_on_error(folder: Path) -> Iterator[None]:
    """A command that fails leaves nothing it created: a half-made output folder would look
    like a result (or block the next run as one with other settings). In a folder that
    existed, only the entries this command added go; what was there stays. An interrupt
    (Ctrl-C) keeps everything, so the same command resumes."""
    before = set(os.listdir(folder)) if folder.is_dir() else None
    try:
        yield
    except Exception:
        if before is None:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            for name in set(os.listdir(folder)) - before:
                path = folder / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise
