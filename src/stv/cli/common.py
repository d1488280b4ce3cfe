"""What the ``stv`` sub-commands share: loading the model, the dataset and the STV settings
from parsed arguments."""

from __future__ import annotations

import os
from dataclasses import fields

from ..errors import StvError
from .parser import DEFAULT_VARIANT


def distributed_module():
    """The data-parallel helpers, imported on use (they import torch; `stv --help` must not)."""
    from .. import distributed

    return distributed


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars (ours say what matters)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def dataset_from_args(args, split: str):
    """(examples, task template) of ``--dataset`` under ``--root``."""
    from ..data import load_dataset
    from ..tasks import TASKS, TEXT_SEPARATOR, TEXT_TEMPLATE, task_for, text_task

    spec = args.dataset
    try:
        examples = load_dataset(spec, getattr(args, "root", None), split)
        if getattr(args, "template", None) or getattr(args, "separator", None) or getattr(args, "normalize", False):
            task = text_task(
                _unescape(args.template or TEXT_TEMPLATE),
                _unescape(args.separator or TEXT_SEPARATOR),
                normalize=bool(getattr(args, "normalize", False)),
            )
        else:
            task = TASKS[args.task] if getattr(args, "task", None) else task_for(spec)
    except ValueError as err:  # DataError included
        raise StvError(f"--dataset {spec}: {err}") from None
    return examples, task


def _unescape(text: str) -> str:
    """Command-line '\\n' -> newline, so --separator '\\n\\n' works from a shell."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def model_from_args(args):
    """The LMM named by ``--model`` (default: the lab model), checked before loading."""
    from .. import load_model
    from ..experiments.lab import LAB_CHECKPOINT

    max_memory = getattr(args, "max_memory", None)
    if max_memory:  # "0=20GiB,1=20GiB,cpu=64GiB"
        max_memory = {(int(k) if k.isdigit() else k): v for k, v in (p.split("=") for p in max_memory.split(","))}
    return load_model(
        args.model or LAB_CHECKPOINT,
        heads_pattern=getattr(args, "heads_pattern", None),
        device=getattr(args, "device", None) or distributed_module().device_for_rank(),
        dtype=getattr(args, "dtype", None),
        trust_remote_code=getattr(args, "trust_remote_code", False),
        device_map=getattr(args, "device_map", None),
        max_memory=max_memory,
        gguf_file=getattr(args, "gguf_file", None),
    )


def lora_config_from_args(args, seed: int):
    """A LoRAConfig from its fixed defaults with the ``--lora-*`` flags that were given, checked
    before any model loads."""
    from ..methods.lora import LoRAConfig

    given = {name: getattr(args, f"lora_{name}", None) for name in ("r", "steps", "lr")}
    config = LoRAConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
    config.check()
    return config


def stv_config_from_args(args):
    """An STVConfig from ``--variant``'s preset with the flags that were given winning."""
    from ..methods.fit import STVConfig

    values = {f.name: getattr(args, f.name) for f in fields(STVConfig) if getattr(args, f.name, None) is not None}
    return STVConfig.preset(getattr(args, "variant", None) or DEFAULT_VARIANT, **values)
