"""The final selection after REINFORCE: the best of a few candidate choices (each run's argmax,
draws from its policy, fixed ones such as "write nothing"), scored on more training queries
than one step sees. Shared by STV's head search, its restarts and the continuation search."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..config import Objective
from ..data.example import Example
from ..hooks.headmap import Location
from ..models import LMM
from ..tasks import Task
from .reinforce import ReinforceResult
from .reward import bank_rewards

if TYPE_CHECKING:
    from ..vectors import TaskVectors


def select_best(
    lmm: LMM,
    train: Sequence[Example],
    task: Task,
    locations: Sequence[Location],
    bank: torch.Tensor,
    searches: Sequence[ReinforceResult],
    draws: int,
    items: int,
    seed: int,
    rng: np.random.Generator,
    fixed: Sequence[torch.Tensor] = (),
    after: "TaskVectors | None" = None,
    objective: Objective = "log_prob",
    recheck: int = 0,
    shifts: torch.Tensor | None = None,
) -> tuple[int | None, torch.Tensor]:
    """(index of the search the winner came from, or None for a ``fixed`` candidate; its choice
    (K,)). Candidates: every search's argmax and ``draws`` samples from its policy, then
    ``fixed``; scored by ``objective`` on ``items`` training queries (``after``: one token later,
    as the continuation search scores). A policy that has not converged puts its argmax on arms
    that were never good together, and one run can settle in a poor optimum; a few joint draws
    of every run, judged on more queries, remove both kinds of noise.

    With ``recheck`` > 0 the best quarter (at least two) are scored again on another draw of
    ``recheck`` queries and the best over both draws wins: the maximum of ~30 scores on 32
    queries is mostly luck."""
    gen = torch.Generator().manual_seed(seed)
    candidates: list[torch.Tensor] = []
    origin: list[int | None] = []
    for i, search in enumerate(searches):
        candidates.append(search.choice[None])  # (1, K) the argmax first
        if draws:
            candidates.append(torch.multinomial(search.probabilities, draws, replacement=True, generator=gen).T)
        origin += [i] * (1 + draws)
    candidates += [choice[None] for choice in fixed]
    origin += [None] * len(fixed)
    every = torch.cat(candidates)  # (N, K)
    first = min(items, len(train))
    scores = functools.partial(_scores, lmm, train, task, locations, bank, shifts, rng, after, objective)
    values = scores(every, first)  # (N,)
    if recheck:
        shortlist = torch.argsort(values, descending=True, stable=True)[: max(2, len(every) // 4)]
        pooled, seen = values[shortlist] * first, first
        for start in range(0, recheck, first):  # draws of ``first`` queries: one batch's memory
            n = min(first, recheck - start)
            pooled += scores(every[shortlist], n) * n
            seen += n
        pooled /= seen  # the mean over every query drawn
        values = torch.full_like(values, float("-inf")).index_put((shortlist,), pooled)
    best = int(values.argmax())
    return origin[best], every[best]


def _scores(lmm, train, task, locations, bank, shifts, rng, after, objective, candidates: torch.Tensor, items: int):
    """(N,) each candidate's mean score on one draw of ``items`` training queries."""
    score = bank_rewards(lmm, train, task, locations, bank, items, rng, after=after, objective=objective, shifts=shifts)
    return score(0, candidates)
