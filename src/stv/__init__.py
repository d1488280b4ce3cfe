"""stv: sensitivity-aware task vectors for many-shot multimodal in-context learning.

Names load on first use (PEP 562), so ``import stv`` and ``stv --help`` do not import torch
or transformers until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import stv_version

__version__ = stv_version()

# public name -> module that defines it
_EXPORTS = {
    "Example": "stv.data",
    "load_dataset": "stv.data",
    "HeadMap": "stv.hooks.headmap",
    "record_heads": "stv.hooks.heads",
    "write_heads": "stv.hooks.heads",
    "STVConfig": "stv.config",
    "fit": "stv.methods.fit",
    "refine": "stv.methods.refine",
    "LMM": "stv.models",
    "load_model": "stv.models",
    "TaskVectors": "stv.vectors",
    "TaskVectorsConfig": "stv.vectors",
    "MTVConfig": "stv.methods.mtv",
    "fit_mtv": "stv.methods.mtv",
    "LoRAConfig": "stv.methods.lora",
    "LoRAAdapter": "stv.methods.lora",
    "fit_lora": "stv.methods.lora",
    "load_fitted": "stv.methods.lora",
    "Task": "stv.tasks",
    "task_for": "stv.tasks",
    "text_task": "stv.tasks",
    "run_eval": "stv.evaluate",
    "first_token_accuracy": "stv.evaluate",
    "generation_accuracy": "stv.evaluate",
    "StvError": "stv.errors",
}
__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from .config import STVConfig
    from .data import Example, load_dataset
    from .errors import StvError
    from .evaluate import first_token_accuracy, generation_accuracy, run_eval
    from .hooks.headmap import HeadMap
    from .hooks.heads import record_heads, write_heads
    from .methods.fit import fit
    from .methods.lora import LoRAAdapter, LoRAConfig, fit_lora, load_fitted
    from .methods.mtv import MTVConfig, fit_mtv
    from .methods.refine import refine
    from .models import LMM, load_model
    from .tasks import Task, task_for, text_task
    from .vectors import TaskVectors, TaskVectorsConfig


_RENAMED = {"record": "record_heads", "replace": "write_heads"}  # old names, kept for one release


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        import warnings

        warnings.warn(
            f"stv.{name} is deprecated; use stv.{_RENAMED[name]} (the old name goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return __getattr__(_RENAMED[name])
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stv' has no attribute {name!r}")
