"""Choosing the insertion schedule from training data, after the vectors are fitted.

Both schedules write the same vectors at the prompt's last token, so the first answer token
(what REINFORCE optimised) is the same under both; they differ in what the model writes after
it. ``prompt_last`` leaves the later tokens alone and keeps multi-token answers whole
(capitalize: "Travel", not "Travel Travel Travel"); ``every_step`` keeps steering them and can
stop a zero-shot query from going on in its own format (choose_first_of_5: "ostrich", not
"ostrich, since, out, ..."). Neither is right for every task, so the fit generates a few
training answers under each and keeps the one whose answers score best under the task's own
metric. Not in the STV or MTV papers; what it gained is in docs/research-log.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from ..config import POLICIES, Policy
from ..data.example import Example
from ..models import LMM
from ..tasks import Task
from ..vectors import TaskVectors


@torch.inference_mode()
def schedule_scores(
    lmm: LMM, vectors: TaskVectors, train: Sequence[Example], task: Task, items: int, rng: np.random.Generator
) -> dict[Policy, float]:
    """{schedule: % of ``items`` zero-shot training queries whose generated answer the task's
    metric scores right} with ``vectors`` written under that schedule."""
    queries = [train[i] for i in rng.choice(len(train), min(items, len(train)), replace=False)]
    prompts = [task.prompt([], q) for q in queries]
    # room for the longest reference answer and the line break that ends it
    new_tokens = max(len(ids) for ids in lmm.answer_ids([task.continuation(q) for q in queries])) + 2
    scores: dict[Policy, float] = {}
    for policy in POLICIES:
        with vectors.apply(lmm, policy):
            texts = lmm.decode(lmm.generate_ids(prompts, max_new_tokens=new_tokens))
        answers = {q.id: task.postprocess(text) for q, text in zip(queries, texts)}
        scores[policy] = float(task.score(queries, answers)["accuracy"])
    return scores


def choose_schedule(
    lmm: LMM, vectors: TaskVectors, train: Sequence[Example], task: Task, items: int, rng: np.random.Generator
) -> TaskVectors:
    """``vectors`` with the schedule whose training answers score best; a tie keeps
    ``prompt_last``, which leaves the answer's later tokens to the model. The scores are kept
    in ``config.extra["schedule_scores"]``."""
    scores = schedule_scores(lmm, vectors, train, task, items, rng)
    best = max(scores, key=lambda p: (scores[p], p == "prompt_last"))
    return replace(vectors, config=vectors.config.with_(policy=best, schedule_scores=scores))
