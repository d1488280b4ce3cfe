"""The reward both searches optimise: the log-probability of the first answer token of a few
zero-shot training queries with candidate vectors written in, every candidate scored in one
batch over a shared prefix cache (STV's REINFORCE, MTV's head search, final selections); or,
for the continuation search, of the token after it (the answer's second token, or the line
break that ends a one-token answer), with the fitted vectors at the prompt's last token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .. import distributed
from ..config import Objective
from ..data.example import Example
from ..errors import StvError
from ..hooks.headmap import Location
from ..models import LMM
from ..models.compat import sliding
from ..tasks import Task

if TYPE_CHECKING:
    from ..vectors import TaskVectors

# "hits": the share of queries whose top token is the answer's, ties broken by the mean log-prob
# clamped to [-LOGP_FLOOR, 0] and scaled to less than one hit in 1,000 queries; "margin": the
# answer token's log-prob minus the best other token's
LOGP_FLOOR, TIE_SCALE = 50.0, 1e-5
PREFIX_CHUNK = 16  # search steps whose fresh queries' prefixes are computed in one pass


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
    after: "TaskVectors | None" = None,
    objective: Objective = "log_prob",
    shifts: torch.Tensor | None = None,
    steps: int = 0,
):
    """reward_fn for :func:`reinforce`: the mean score (by default the log-prob) of the first
    answer token over a few zero-shot queries, every sample scored in one batch over a shared
    prefix cache.

    With ``prefix_pool`` > 0 the queries come from that many fixed groups, each prefix
    computed once and reused: a step then costs one pass over the fanned-out last tokens.
    With ``after`` (fitted vectors, written at the prompt's last token) the candidates are
    scored one token later: on the answer's second token given its first. ``objective`` "hits"
    scores by how many queries' top token is the answer's, "margin" by how far its log-prob is
    above the best other token's: log-prob rewards putting mass on the task's answer tokens as
    much as choosing the right one among them. ``shifts`` (K, M, D), with the bank: what each
    arm adds after its value is written (the shift arm). ``steps``: how many times the
    search will call it; fresh queries are then drawn :data:`PREFIX_CHUNK` steps ahead, in
    the same order, and their prefixes computed in one pass (0: one step at a time)."""
    pool: dict[int, tuple] = {}
    groups = [[train[i] for i in rng.choice(len(train), queries_per_step, replace=False)] for _ in range(prefix_pool)]
    ahead: list[tuple] = []  # (prefix, targets) of the next steps' fresh queries, drawn in step order
    left = steps if not sliding(lmm.model) else 0  # steps whose queries may still be drawn ahead

    def fresh() -> tuple:
        nonlocal left
        if not ahead:  # the next few steps' queries, drawn as step by step, their prefixes in one pass
            n = max(1, min(PREFIX_CHUNK, left))
            left -= n
            chunk = [[train[i] for i in rng.choice(len(train), queries_per_step, replace=False)] for _ in range(n)]
            prefix, targets = _prefix_and_targets(lmm, [q for group in chunk for q in group], task, after)
            q = queries_per_step
            ahead.extend((prefix.rows(k * q, k * q + q), targets[k * q : k * q + q]) for k in range(n))
        return ahead.pop(0)

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
                pool[g] = _prefix_and_targets(lmm, groups[g], task, after)
            prefix, targets = pool[g]
        else:
            prefix, targets = fresh()
        rows = values.repeat(len(targets), 1, 1)  # row q*S + s -> sample s
        added = None if shifts is None else shifts[torch.arange(len(locations)), choices].repeat(len(targets), 1, 1)
        with lmm.candidates(locations, rows, samples, shifts=added):
            logits = lmm.last_token_logits(prefix, repeats=samples, keep=bool(prefix_pool))
        local = score_rows(logits, targets.repeat_interleave(samples), objective).view(len(targets), samples).mean(0)
        if not dist.enabled:
            return local
        out = torch.empty(len(all_choices))
        for idx, part in dist.gather((mine, local)):
            out[idx] = part
        return out

    return reward


def score_rows(logits: torch.Tensor, target: torch.Tensor, objective: Objective) -> torch.Tensor:
    """Per row (Q*S,): the target token's log-prob, its margin over the best other token's
    (> 0 exactly when it is the top token), or a hit (1/0) plus the scaled log-prob."""
    mine, best_other = _target_and_best_other(logits, target)  # (Q*S,) each
    if objective == "log_prob":
        return mine.cpu()
    if objective == "margin":
        return (mine - best_other).cpu()
    return _hits(mine > best_other, mine)


def answer_scores(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """ "hits" over whole teacher-forced answers, per row (B,): 1 where every valid token is the
    top token at its step (greedy decoding would say exactly this), plus the scaled log-prob of
    the answer. ``logits`` (B, T, V); ``target``, ``valid`` (B, T)."""
    mine, best_other = _target_and_best_other(logits, target)  # (B, T) each
    valid = valid.to(logits.device)
    return _hits(((mine > best_other) | ~valid).all(1), torch.where(valid, mine, 0.0))


def _target_and_best_other(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The target token's log-prob and the best other token's, over any leading shape:
    ``logits`` (..., V), ``target`` (...)."""
    logp = torch.log_softmax(logits.float(), -1)  # (..., V)
    index = target.to(logits.device)[..., None]  # (..., 1)
    mine = logp.gather(-1, index).squeeze(-1)  # (...)
    return mine, logp.scatter(-1, index, float("-inf")).max(-1).values


def _hits(hit: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """The "hits" score per row: 1/0 plus the log-prob (summed over a row's tokens when it has
    several; masked ones 0), each token's clamped to -LOGP_FLOOR, scaled to break ties only."""
    logp = logp.clamp(min=-LOGP_FLOOR)
    total = logp.sum(-1) if logp.dim() > 1 else logp  # (rows,)
    return (hit.float() + TIE_SCALE * total).cpu()


def _prefix_and_targets(lmm: LMM, queries: Sequence[Example], task: Task, after: "TaskVectors | None"):
    """(Prefix, target token per query) of the zero-shot prompts: the first answer token, or
    with ``after`` the token after it, the prefix then holding the first answer token too."""
    prompts = [task.prompt([], q) for q in queries]
    if after is None:
        return lmm.prefix(prompts), first_token_ids(lmm, queries, task)
    ids = lmm.answer_ids([task.answer_line(q) for q in queries])
    if min(map(len, ids)) < 2:
        raise StvError("an answer and the line break after it tokenize to one token: no second token to search for")
    with after.apply(lmm, "prompt_last"):  # one forward pass: it ends at the prompt's last token
        prefix = lmm.prefix(prompts, then=torch.tensor([i[0] for i in ids]))
    return prefix, torch.tensor([i[1] for i in ids])
