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
did worse on queries it did not train on. ``refined`` runs it from one or more starts (the
searched vectors, zero, the searched vectors as steering) and keeps the best held-out one.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import RefineObjective, RefineStart, STVConfig
from ..data.example import Example
from ..hooks.headmap import Location
from ..hooks.heads import record_heads, write_heads
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
    *,
    config: STVConfig | None = None,
    rng: np.random.Generator | int = 0,
    batch: int = BATCH,
    progress: bool = True,
    held_out: Sequence[Example] | None = None,
) -> tuple[TaskVectors, RefineLog]:
    """``vectors`` with a learned correction at their heads (the first generated token's
    insertion: the prompt's last token), and what it did on the held-out queries (``held_out``,
    or up to 64 of ``train`` set aside, never trained on). ``config`` gives the steps, learning
    rate and objective (``refine``, ``refine_lr``, ``refine_objective``; default STVConfig())."""
    config = config or STVConfig()
    steps, lr, objective = config.refine, config.refine_lr, config.refine_objective
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    if steps <= 0 or not len(vectors.locations):
        return vectors, RefineLog(0.0, 0.0, 0, 0)
    held, pool = split_held_out(train, rng) if held_out is None else (list(held_out), list(train))
    locations = vectors.location_list()
    held_queries = answer_queries(lmm, held, task, objective)
    # (K, 1): a step of 1 in u moves a head by its typical size
    scale = _head_scale(lmm, locations, held_queries.inputs)
    base = shifts_of(vectors)  # (K, D)
    u = torch.zeros_like(base, requires_grad=True)  # (K, D) the correction, in units of each head's scale
    optimiser = torch.optim.Adam([u], lr=lr)
    best_score = _judge(lmm, vectors, base, held_queries)
    before, best_u, best_step = best_score, u.detach().clone(), 0
    for step in tqdm(range(1, steps + 1), desc="refine", disable=not progress, leave=False):
        queries = [pool[i] for i in rng.choice(len(pool), min(batch, len(pool)), replace=False)]
        drawn = answer_queries(lmm, queries, task, objective)
        with torch.enable_grad():
            loss = answer_loss(_logits(lmm, vectors, base + u * scale, drawn), drawn)
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


def answer_queries(lmm: LMM, queries: Sequence[Example], task: Task, objective: RefineObjective) -> _Queries:
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
        writes = write_heads(lmm.model, lmm.heads, where, written.vectors, "prompt_last", shifts=written.shifts)
    with record_heads(lmm.heads, locations) as rec, writes, torch.inference_mode():  # recorded before written over
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
    writes = write_heads(lmm.model, lmm.heads, locations, vectors.vectors, policy, continuation=later, shifts=shifts)
    if queries.valid is None:
        with writes:
            return lmm.model(**queries.inputs, use_cache=False, logits_to_keep=1).logits[:, -1].float()
    prefix = lmm.prefix_of(queries.inputs, grad=True)  # before the writes, which touch no earlier token
    with writes:  # under prompt_last nothing is written at answer tokens: feed them in one pass
        steps = lmm.teacher_forced(
            prefix, queries.target, queries.valid, rest_at_once=policy == "prompt_last" and later is None
        )
        return torch.stack([logits.float() for logits in steps], 1)  # (B, T, V)


def answer_loss(logits: torch.Tensor, queries: _Queries) -> torch.Tensor:
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


# the starts refinement tries under each refine_start, in the order they are refined (and win ties)
STARTS: dict[RefineStart, tuple[str, ...]] = {
    "search": ("search",),
    "zero": ("zero",),
    "steer": ("steer",),
    "both": ("search", "zero"),
    "all": ("search", "zero", "steer"),
}
STEER_QUERIES = 64  # zero-shot training prompts whose mean head outputs turn a replacement into steering


def refined(
    lmm: LMM,
    artifact: TaskVectors,
    train: Sequence[Example],
    task: Task,
    config: STVConfig,
    locations: Sequence[Location],
    rng: np.random.Generator,
    progress: bool,
    judge: tuple[list[Example], list[Example]] | None = None,
) -> TaskVectors:
    """``artifact`` with refinement's correction added to the searched vectors, to every head's
    own output (``refine_start`` zero), to the searched vectors turned into steering (steer),
    or to several of them, the best on the same held-out queries (both, all: the search's
    result, unrefined, competes too: each start's judge begins with it)."""
    names = STARTS[config.refine_start]
    searched = at_every_location(artifact, locations) if config.refine_heads == "every" else artifact
    starts: dict[str, TaskVectors] = {}
    if "search" in names:
        starts["search"] = searched
    if "zero" in names:
        starts["zero"] = at_every_location(_writing_nothing(artifact), locations)
    if len(starts) > 1 and not len(starts["search"].locations) and len(starts["zero"].locations):
        del starts["search"]  # nothing written: the same as zero's "before"
    held = None  # "search" alone draws its held-out queries as it always did
    if judge is not None:  # drawn before the search (judge_apart)
        held, train = judge
    elif config.refine_start != "search":
        held, train = split_held_out(train, rng)
    writes = bool(len(searched.locations)) and not torch.isnan(searched.vectors).all()
    if "steer" in names and (writes or "zero" not in starts):  # writing nothing, steering is the zero start
        starts["steer"] = steered(lmm, searched, task, train[:STEER_QUERIES])
    # one stream of draws, or independent ones when several starts compete
    draws = dict(zip(starts, rng.spawn(len(starts)))) if len(starts) > 1 else {name: rng for name in starts}
    results = {
        name: refine(lmm, start, train, task, config=config, rng=draws[name], progress=progress, held_out=held)
        for name, start in starts.items()
    }
    judged = {name: result[1].after for name, result in results.items()}  # each start's best held-out score
    best = _best_start(judged, config.steer_margin, len(held or ()))
    refined, log = results[best]
    changes: dict = {"refine": {**asdict(log), "start": best, "judged": judged}}
    if config.unreplace:
        assert held is not None  # config.problems() asks for held-out judging
        held_queries = answer_queries(lmm, held, task, config.refine_objective)
        refined, turned = unreplaced(lmm, refined, task, train[:STEER_QUERIES], held_queries)
        changes["refine"]["unreplaced"] = turned
    if best == "zero":  # every head keeps its own output (plus the correction): no arm of the search
        changes["arms"] = {**{arm: 0 for arm in refined.config.extra.get("arms", {})}, "keep": len(locations)}
    refined.config = refined.config.with_(**changes)
    return refined


def _best_start(judged: dict[str, float], steer_margin: int, queries: int) -> str:
    """The start kept: the highest held-out score (ties: the first in ``judged``'s order, so
    search, zero, steer). With ``steer_margin`` > 0 steering is kept only when it answers at
    least that many more of the ``queries`` held-out queries than the best of the others (a
    "hits" score is hits / queries plus a log-prob tie-break far below 1 / queries, so rounding
    recovers the count): steering tends to win on the held-out queries by a query or two that
    the test does not confirm (docs/research-log.md)."""
    best = max(judged, key=judged.__getitem__)
    if best != "steer" or steer_margin <= 0:
        return best
    others = {name: score for name, score in judged.items() if name != "steer"}
    runner_up = max(others, key=others.__getitem__)
    gained = round(judged["steer"] * queries) - round(others[runner_up] * queries)
    return "steer" if gained >= steer_margin else runner_up


def steered(lmm: LMM, artifact: TaskVectors, task: Task, queries: Sequence[Example]) -> TaskVectors:
    """``artifact`` with its written heads turned from replacement into steering: own output +
    (value - the head's mean own output on ``queries``' zero-shot prompts, the heads before it
    written as the search chose, so on those prompts steering writes what replacing wrote). On
    average the head writes what the search chose, and it still carries what it says about this
    query (the lab: a replaced head can lose one digit class for good, which no added correction
    brings back)."""
    written = ~torch.isnan(artifact.vectors).any(-1)  # (K,)
    inputs = lmm.prepare([task.prompt([], q) for q in queries])
    own = head_outputs(lmm, artifact.location_list(), inputs, written=artifact).mean(0)  # (K, D) under the writes
    base = shifts_of(artifact)  # (K, D)
    shifts = torch.where(written[:, None], torch.nan_to_num(artifact.vectors) - own + base, base)  # (K, D)
    return replace(artifact, vectors=torch.full_like(artifact.vectors, float("nan")), shifts=shifts)


def unreplaced(
    lmm: LMM, artifact: TaskVectors, task: Task, queries: Sequence[Example], held: _Queries
) -> tuple[TaskVectors, int]:
    """``artifact`` with some replaced heads turned into steering (as :func:`steered` turns
    them, means on ``queries``), and how many: one head at a time in layer order, kept where
    ``held`` answers at least one more query. A replacement erases what the head said about
    the query (on the lab it can cost a whole digit class that no added correction brings
    back), while steering every head loses tasks that need a fixed answer written: this keeps
    replacement only where it is needed, head by head."""
    rows = (~torch.isnan(artifact.vectors).any(-1)).nonzero().flatten().tolist()
    if not rows:
        return artifact, 0
    as_steering = steered(lmm, artifact, task, queries).shifts  # (K, D)
    assert as_steering is not None

    def answered(vectors: TaskVectors) -> int:  # held-out hits (the log-prob tie-break is < 1 / queries)
        return round(_judge(lmm, vectors, shifts_of(vectors), held) * len(held.target))

    current, best, turned = artifact, answered(artifact), 0
    for row in rows:
        vectors, shifts = current.vectors.clone(), shifts_of(current).clone()  # (K, D) each
        vectors[row], shifts[row] = float("nan"), as_steering[row]
        candidate = replace(current, vectors=vectors, shifts=shifts)
        score = answered(candidate)
        if score > best:
            current, best, turned = candidate, score, turned + 1
    return current, turned


def shifts_of(artifact: TaskVectors) -> torch.Tensor:
    """What ``artifact`` adds after its writes, zeros where it adds nothing: (K, D)."""
    return artifact.shifts if artifact.shifts is not None else torch.zeros_like(artifact.vectors)


def _writing_nothing(artifact: TaskVectors) -> TaskVectors:
    """``artifact`` with no location written (the search's choice dropped)."""
    no_rows = torch.zeros(0, artifact.head_dim)  # (0, D)
    return replace(artifact, locations=torch.zeros(0, 2, dtype=torch.long), vectors=no_rows, shifts=None)


def at_every_location(artifact: TaskVectors, locations: Sequence[Location]) -> TaskVectors:
    """``artifact`` over all ``locations``: those it does not write keep their own output (NaN
    vector, zero shift), so a correction can be learned there too."""
    where = {loc: i for i, loc in enumerate(artifact.location_list())}
    vectors = torch.full((len(locations), artifact.head_dim), float("nan"))  # (K, D)
    shifts = torch.zeros(len(locations), artifact.head_dim)  # (K, D)
    for row, loc in enumerate(locations):
        if loc in where:
            vectors[row] = artifact.vectors[where[loc]]
            if artifact.shifts is not None:
                shifts[row] = artifact.shifts[where[loc]]
    return replace(artifact, locations=torch.tensor(locations, dtype=torch.long), vectors=vectors, shifts=shifts)
