"""The reward both searches optimise: the log-probability of the first answer token of a few
zero-shot training queries with candidate vectors written in, every candidate scored in one
batch over a shared prefix cache (STV's REINFORCE, MTV's head search, final selections)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import distributed
from ..data.example import Example
from ..heads import Location
from ..models import LMM
from ..tasks import Task


def first_token_ids(lmm: LMM, examples: Sequence[Example], task: Task) -> torch.Tensor:
    """The first token of each target answer as it continues the query prompt."""
    return torch.tensor([ids[0] for ids in lmm.answer_ids([task.continuation(e) for e in examples])])


def bank_rewards(
    lmm: LMM,
    train: Sequence[Example],
    task: Task,
    locations: Sequence[Location],
    bank: torch.Tensor,
    queries_per_step: int,
    rng: np.random.Generator,
    prefix_pool: int = 0,
):
    """reward_fn for :func:`reinforce`: mean log-prob of the first answer token over a few
    zero-shot queries, every sample scored in one batch over a shared prefix cache.

    With ``prefix_pool`` > 0 the queries come from that many fixed groups, each prefix
    computed once and reused: a step then costs one pass over the fanned-out last tokens."""
    pool: dict[int, tuple] = {}
    groups = [[train[i] for i in rng.choice(len(train), queries_per_step, replace=False)] for _ in range(prefix_pool)]

    dist = distributed.current()

    def reward(step: int, choices: torch.Tensor) -> torch.Tensor:
        # Every rank draws the same queries (same seed, same calls) and scores its share of
        # the samples; the rewards are gathered back in sample order.
        all_choices = choices
        mine = torch.arange(len(choices))[dist.rank :: dist.world]
        choices = all_choices[mine]
        samples = choices.shape[0]
        values = bank[torch.arange(len(locations)), choices]  # (S, K, D)
        if prefix_pool:
            g = int(rng.integers(prefix_pool))
            if g not in pool:
                pool[g] = (groups[g], lmm.prefix([task.prompt([], q) for q in groups[g]]))
            queries, prefix = pool[g]
        else:
            queries = [train[i] for i in rng.choice(len(train), queries_per_step, replace=False)]
            prefix = lmm.prefix([task.prompt([], q) for q in queries])
        rows = values.repeat(len(queries), 1, 1)  # row q*S + s -> sample s
        with lmm.candidates(locations, rows, samples):
            logits = lmm.last_token_logits(prefix, repeats=samples, keep=bool(prefix_pool))
        target = first_token_ids(lmm, queries, task).repeat_interleave(samples)
        logp = torch.log_softmax(logits, -1).gather(1, target[:, None].to(logits.device)).squeeze(1).cpu()
        local = logp.view(len(queries), samples).mean(0)
        if not dist.enabled:
            return local
        out = torch.empty(len(all_choices))
        for idx, part in dist.gather((mine, local)):
            out[idx] = part
        return out

    return reward
