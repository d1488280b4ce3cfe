"""Gradient refinement of fitted vectors (not in the paper, nor in MTV).

STV and MTV choose each head's vector from a few candidates (centroids, the mean, "leave
alone"); neither moves a vector once chosen. Refinement keeps the chosen heads and learns a
small correction at each of them by gradient descent on the answer's cross-entropy over
zero-shot training queries (its first token, or every token of it and the line break that
ends it, teacher-forced as ``generate`` would write them), added after the write (the artifact's
``shifts``: a replaced head gets value + correction, a steered head own output + shift +
correction). The weights stay frozen; only (K, D) numbers move. Queries held out of the
training draws judge the correction every few steps, and the best one (or none: the
correction starts at zero and competes too) is kept, so refinement never ships something that
did worse on queries it did not train on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import RefineObjective
from ..data.example import Example
from ..heads import record
from ..heads import replace as replace_heads
from ..models import LMM
from ..tasks import Task
from ..vectors import TaskVectors
from .reward import answer_scores, first_token_ids, score_rows

HELD_OUT = 64  # training queries that judge the correction, never drawn to train it
JUDGE_EVERY = 10  # steps between judgements
BATCH = 16  # training queries per gradient step
ANSWER_TOKENS = 8  # tokens of an answer line the "answer" objective teacher-forces (compare's max_new_tokens)


@dataclass(frozen=True)
class _Queries:
    """Zero-shot prompts' model inputs and what they should be answered: the first answer token
    ``target`` (B,), or with ``valid`` the answer line's tokens (B, T), true where a row has one."""

    inputs: dict
    target: torch.Tensor
    valid: torch.Tensor | None = None


@dataclass(frozen=True)
class RefineLog:
    """What refinement did: the held-out score (hits + tie-breaking log-prob) before and after,
    and the step whose correction was kept (0: none)."""

    before: float
    after: float
    kept_step: int
    steps: int


def refine(
    lmm: LMM,
    vectors: TaskVectors,
    train: Sequence[Example],
    task: Task,
    steps: int,
    lr: float,
    rng: np.random.Generator,
    batch: int = BATCH,
    progress: bool = True,
    held_out: Sequence[Example] | None = None,
    objective: RefineObjective = "first_token",
) -> tuple[TaskVectors, RefineLog]:
    """``vectors`` with a learned correction at their heads (the first generated token's
    insertion: the prompt's last token), and what it did on the held-out queries (``held_out``,
    or up to 64 of ``train`` set aside, never trained on), scored by ``objective``."""
    if steps <= 0 or not len(vectors.locations):
        return vectors, RefineLog(0.0, 0.0, 0, 0)
    held, pool = split_held_out(train, rng) if held_out is None else (list(held_out), list(train))
    locations = vectors.location_list()
    held_queries = _queries(lmm, held, task, objective)
    # (K, 1): a step of 1 in u moves a head by its typical size
    scale = _head_scale(lmm, locations, held_queries.inputs)
    base = vectors.shifts if vectors.shifts is not None else torch.zeros_like(vectors.vectors)  # (K, D)
    u = torch.zeros_like(base, requires_grad=True)  # (K, D) the correction, in units of each head's scale
    optimiser = torch.optim.Adam([u], lr=lr)
    best_score = _judge(lmm, vectors, base, held_queries)
    before, best_u, best_step = best_score, u.detach().clone(), 0
    for step in tqdm(range(1, steps + 1), desc="refine", disable=not progress, leave=False):
        queries = [pool[i] for i in rng.choice(len(pool), min(batch, len(pool)), replace=False)]
        drawn = _queries(lmm, queries, task, objective)
        with torch.enable_grad():
            loss = _loss(_logits(lmm, vectors, base + u * scale, drawn), drawn)
            (grad,) = torch.autograd.grad(loss, [u])  # the weights' gradients are never computed
        u.grad = grad
        optimiser.step()
        if step % JUDGE_EVERY == 0 or step == steps:
            score = _judge(lmm, vectors, base + u.detach() * scale, held_queries)
            if score > best_score:
                best_score, best_u, best_step = score, u.detach().clone(), step
    if not best_step:
        return vectors, RefineLog(before, best_score, 0, steps)
    shifts = base + best_u * scale  # (K, D)
    return replace(vectors, shifts=shifts), RefineLog(before, best_score, best_step, steps)


def split_held_out(train: Sequence[Example], rng: np.random.Generator) -> tuple[list[Example], list[Example]]:
    """(held out, the rest): up to 64 training queries, at most half, that judge a correction."""
    order = rng.permutation(len(train))
    held = [train[i] for i in order[: min(HELD_OUT, len(train) // 2)]]
    return held, [train[i] for i in order[len(held) :]]


def _queries(lmm: LMM, queries: Sequence[Example], task: Task, objective: RefineObjective) -> _Queries:
    """The zero-shot prompts' model inputs and their targets under ``objective``."""
    inputs = lmm.prepare([task.prompt([], q) for q in queries])
    if objective == "first_token":
        return _Queries(inputs, first_token_ids(lmm, queries, task).to(lmm.device))
    return _Queries(inputs, *lmm.answer_targets([task.answer_line(q) for q in queries], ANSWER_TOKENS))


def head_outputs(
    lmm: LMM, locations: list[tuple[int, int]], inputs: dict, written: TaskVectors | None = None
) -> torch.Tensor:
    """Each head's own output at the last token of the prompts in ``inputs``: (B, K, D); with
    ``written`` inserted there, what each head computes given what the heads before it wrote."""
    writes: contextlib.AbstractContextManager = contextlib.nullcontext()
    if written is not None:
        where = written.location_list()
        writes = replace_heads(lmm.model, lmm.heads, where, written.vectors, "prompt_last", shifts=written.shifts)
    with record(lmm.heads, locations) as rec, writes, torch.inference_mode():  # recorded before written over
        lmm.model(**inputs, use_cache=False, logits_to_keep=1)
    assert rec.values is not None  # the pass above reached every layer
    return rec.values


def _head_scale(lmm: LMM, locations: list[tuple[int, int]], inputs: dict) -> torch.Tensor:
    """Each head's root-mean-square output at the last token of zero-shot prompts: (K, 1)."""
    return head_outputs(lmm, locations, inputs).pow(2).mean((0, 2)).sqrt()[:, None]  # (K, 1)


def _logits(lmm: LMM, vectors: TaskVectors, shifts: torch.Tensor, queries: _Queries) -> torch.Tensor:
    """With ``vectors`` written and ``shifts`` added at the prompt's last token: next-token
    logits (B, V), or with an answer line the logits at each of its tokens (B, T, V),
    teacher-forced as ``generate`` would run the fitted schedule and continuation."""
    policy = vectors.config.policy if queries.valid is not None else "prompt_last"
    later = vectors.continuation if policy == "prompt_last" and queries.valid is not None else None
    locations = vectors.location_list()
    with replace_heads(lmm.model, lmm.heads, locations, vectors.vectors, policy, continuation=later, shifts=shifts):
        if queries.valid is None:
            return lmm.model(**queries.inputs, use_cache=False, logits_to_keep=1).logits[:, -1].float()
        steps = lmm.teacher_forced(queries.inputs, queries.target, queries.valid)
        return torch.stack([logits.float() for logits in steps], 1)  # (B, T, V)


def _loss(logits: torch.Tensor, queries: _Queries) -> torch.Tensor:
    """Cross-entropy of the first answer token, or the mean over an answer line's tokens."""
    if queries.valid is None:
        return torch.nn.functional.cross_entropy(logits, queries.target)
    per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), queries.target, reduction="none")  # (B, T)
    return (per_token * queries.valid).sum() / queries.valid.sum()


def _judge(lmm: LMM, vectors: TaskVectors, shifts: torch.Tensor, queries: _Queries) -> float:
    """Held-out score: the search's "hits" objective (the share of queries whose top token is
    the answer's, or whose every answer token is, ties broken by the mean log-prob)."""
    with torch.inference_mode():
        logits = _logits(lmm, vectors, shifts, queries)
        if queries.valid is None:
            return float(score_rows(logits, queries.target, "hits").mean())
        return float(answer_scores(logits, queries.target, queries.valid).mean())
