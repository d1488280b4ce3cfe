"""Continuation vectors: what the written heads carry at the answer's later tokens.

Task vectors written at the prompt's last token steer the first answer token; a zero-shot
query then writes the rest of the answer without the demonstrations, and on tasks whose
format the query alone does not show (stop after one list item, stop after one word) it
goes on in the query's own format. Writing the same vectors at every token (MTV's
``every_step``) breaks multi-token answers. Here each written head instead gets, at
generated token t, the mean of its own output at answer position t over many-shot prompts
(teacher-forced with the reference answer and the line break that ends it): the signal the
demonstrations give there, averaged over queries. Not in the STV or MTV papers.
"""

from __future__ import annotations

from dataclasses import replace as dc_replace
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..data.example import Example
from ..hooks.heads import record_heads
from ..models import LMM
from ..tasks import Task, sample_demos
from ..vectors import TaskVectors
from .reinforce import reinforce
from .reward import bank_rewards
from .select import select_best

if TYPE_CHECKING:
    from ..config import STVConfig


def continuation_means(
    lmm: LMM,
    train: Sequence[Example],
    task: Task,
    locations: Sequence[tuple[int, int]],
    steps: int,
    prompts: int,
    shots: int,
    batch_size: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """(steps, K, head_dim): mean output of each location at answer tokens 1..steps over
    ``prompts`` many-shot prompts; NaN where no prompt's answer is that long."""
    queries = [train[i] for i in rng.choice(len(train), min(prompts, len(train)), replace=False)]
    texts = [task.prompt(sample_demos(train, q, shots, rng), q) for q in queries]
    answers = [task.answer_line(q) for q in queries]
    total = torch.zeros(steps, len(locations), lmm.heads.head_dim)
    count = torch.zeros(steps, 1, 1)
    for start in range(0, len(texts), batch_size):
        values, valid = _record_steps(
            lmm, texts[start : start + batch_size], answers[start : start + batch_size], locations, steps
        )
        total += (values * valid[..., None, None]).sum(1)
        count += valid.sum(1)[:, None, None]
    means = total / count.clamp(min=1)
    means[count.expand_as(means) == 0] = float("nan")
    return means


@torch.inference_mode()
def _record_steps(lmm: LMM, prompts, answers: Sequence[str], locations, steps: int):
    """Last-position outputs at teacher-forced answer tokens 1..steps: values (steps, B, K, D)
    and valid (steps, B), true where the answer has a token t to predict."""
    target, valid = lmm.answer_targets(answers, steps + 1)  # (B, width)
    width = target.shape[1]
    with record_heads(lmm.heads, locations, passes=steps + 1) as rec:
        for _ in lmm.teacher_forced(lmm.prepare(prompts), target, valid):
            pass
    values = torch.zeros(steps, len(answers), len(locations), lmm.heads.head_dim)
    for t, x in enumerate(rec.passes[1:]):  # pass 0 is the prompt
        values[t] = x
    ok = torch.zeros(steps, len(answers), dtype=torch.bool)
    ok[: width - 1] = valid[:, 1:width].T.cpu()  # token t exists to be predicted at pass t
    return values, ok


def with_continuation(
    vectors: TaskVectors,
    lmm: LMM,
    train: Sequence[Example],
    task: Task,
    steps: int = 4,
    prompts: int = 40,
    shots: int = 10,
    batch_size: int = 8,
    seed: int = 0,
) -> TaskVectors:
    """``vectors`` plus continuation vectors at the same locations (written under prompt_last)."""
    means = continuation_means(
        lmm, train, task, vectors.location_list(), steps, prompts, shots, batch_size, np.random.default_rng(seed + 7)
    )
    config = vectors.config.with_(
        policy="prompt_last", continuation={"steps": steps, "prompts": prompts, "shots": shots, "seed": seed}
    )
    return dc_replace(vectors, config=config, continuation=means)


def search_continuation(
    vectors: TaskVectors,
    lmm: LMM,
    train: Sequence[Example],
    task: Task,
    config: "STVConfig",
    rng: np.random.Generator,
    progress: bool = False,
) -> TaskVectors:
    """``vectors`` plus a searched continuation at the first generated token (written under
    prompt_last): every head may get its mean output at that position in many-shot prompts,
    and REINFORCE (MTV's Bernoulli arms, ``config.continuation_search`` steps) picks the heads
    whose means raise the log-prob of the answer's second token, or of the line break that
    ends a one-token answer, with ``vectors`` written at the prompt's last token. This is
    where a zero-shot query decides between stopping and going on in its own format; the
    heads the first search wrote need not be the ones that carry the format."""
    # examples whose answer has a token after its first: the answer's second, or the line
    # break that ends it (a word-level tokenizer such as the lab's gives neither)
    train = [e for e, ids in zip(train, lmm.answer_ids([task.answer_line(e) for e in train])) if len(ids) > 1]
    if len(train) < max(config.queries_per_step, config.shots + 1):
        skipped = {"steps": 0, "skipped": "too few answers with a token after the first"}
        return dc_replace(vectors, config=vectors.config.with_(continuation_search=skipped))
    everywhere = lmm.heads.all_locations()
    means = continuation_means(lmm, train, task, everywhere, 1, config.pairs, config.shots, config.batch_size, rng)[0]
    bank = torch.stack([torch.full_like(means, float("nan")), means], 1)  # (L*H, 2, D): leave alone, write the mean
    reward = bank_rewards(
        lmm,
        train,
        task,
        everywhere,
        bank,
        config.queries_per_step,
        rng,
        config.prefix_pool,
        after=vectors,
        objective=config.continuation_objective,
        steps=config.continuation_search,
    )
    search = reinforce(
        reward,
        len(everywhere),
        2,
        config.continuation_search,
        config.samples,
        config.lr,
        seed=config.seed + 2,
        progress=progress,
        init_logits=torch.tensor([0.0, -1.0]),  # MTV's start: P(write) 0.27
    )
    # the argmax, a few draws and writing nothing, scored on more queries than a step sees
    _, chosen = select_best(
        lmm,
        train,
        task,
        everywhere,
        bank,
        [search],
        max(1, config.final_samples),
        config.final_items,
        config.seed + 3,
        rng,
        fixed=[torch.zeros_like(search.choice)],
        after=vectors,
        objective=config.continuation_objective,
        recheck=config.final_recheck,
    )
    chosen = chosen.bool()  # (L*H,) write the mean here
    return _merge(vectors, everywhere, chosen, means, config)


def _merge(vectors: TaskVectors, everywhere, chosen: torch.Tensor, means: torch.Tensor, config) -> TaskVectors:
    """One artifact over the union of both searches' heads: NaN where a head is written at
    only one of the two positions (prompt's last token, first generated token)."""
    union = sorted(set(vectors.location_list()) | {loc for loc, c in zip(everywhere, chosen.tolist()) if c})
    index = {loc: i for i, loc in enumerate(everywhere)}
    first = {loc: v for loc, v in zip(vectors.location_list(), vectors.vectors)}
    nan = torch.full((vectors.head_dim,), float("nan"))
    values = torch.stack([first.get(loc, nan) for loc in union]) if union else vectors.vectors[:0]  # (K', D)
    later = torch.stack([means[index[loc]] if chosen[index[loc]] else nan for loc in union]) if union else values
    shifts = None
    if vectors.shifts is not None:  # the shift arm's additions stay at the prompt's last token
        added = dict(zip(vectors.location_list(), vectors.shifts))
        shifts = torch.stack([added.get(loc, torch.zeros_like(nan)) for loc in union]) if union else values
    settings = {"steps": config.continuation_search, "heads": int(chosen.sum())}
    return dc_replace(
        vectors,
        locations=torch.tensor(union, dtype=torch.long).reshape(-1, 2),
        vectors=values,
        continuation=later[None],  # (1, K', D)
        shifts=shifts,
        config=vectors.config.with_(policy="prompt_last", continuation_search=settings),
    )
