"""Run a method over examples and score it."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.example import Example
from .models import LMM
from .methods.fit import first_token_ids
from .tasks import Task, sample_demos


@torch.inference_mode()
def first_token_accuracy(lmm: LMM, examples: Sequence[Example], task: Task, pool: Sequence[Example] = (),
                         shots: int = 0, vectors=None, seed: int = 0, batch_size: int = 32,
                         progress: bool = False, desc: str = "eval") -> float:
    """% of examples whose answer's first token is the argmax over the *whole* vocabulary.

    ``shots`` demonstrations come from ``pool`` (seeded, never the query); ``vectors`` (a
    TaskVectors or anything with ``apply(lmm)``) are inserted while scoring.
    """
    rng = np.random.default_rng(seed)
    prompts = [task.prompt(sample_demos(pool, q, shots, rng), q) for q in examples]
    targets = first_token_ids(lmm, examples, task)
    correct = 0
    with vectors.apply(lmm) if vectors is not None else contextlib.nullcontext():
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress):
            logits = lmm.forward(prompts[start : start + batch_size])
            correct += int((logits.argmax(-1).cpu() == targets[start : start + batch_size]).sum())
    return 100.0 * correct / max(1, len(examples))
