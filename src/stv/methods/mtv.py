"""MTV (Huang et al. 2024) as its code does it, without its bugs (bias dropped, batch row -1).

Mean last-token activations of every head over N many-shot prompts; one Bernoulli policy per
head (logit -1, keep-probability 0.269) trained with REINFORCE on the first answer token's
cross-entropy with the kept heads replaced by their means; then 10 masks sampled from the
trained probabilities and the one with the lowest mean cost on held-out training items kept.
A Bernoulli with logit -1 is a two-arm softmax with logits (0, -1), so the shared
:func:`reinforce` serves both methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .. import distributed
from ..config import Objective
from ..data.example import Example
from ..models import LMM
from ..tasks import Task, sample_demos, task_for
from ..vectors import TaskVectors, TaskVectorsConfig
from .log import FitLog
from .reinforce import reinforce
from .reward import bank_rewards
from .scan import record_prompts
from .select import select_best


@dataclass
class MTVConfig:
    """MTV's settings (Huang et al. 2024): mean activations, Bernoulli head search."""

    prompts: int = 100  # N prompts for the mean activations
    shots: int = 4
    steps: int = 600
    samples: int = 32
    lr: float = 0.1
    init_logit: float = -1.0
    queries_per_step: int = 1
    objective: Objective = "log_prob"  # the search's and the mask selection's reward (MTV: log_prob)
    final_masks: int = 10
    final_items: int = 50
    final_recheck: int = 0  # >0: the best quarter of the masks re-scored on this many more queries (not in MTV)
    batch_size: int = 8
    policy: str = "every_step"
    seed: int = 0


def mean_activations(
    lmm: LMM,
    train: Sequence[Example],
    task: Task,
    prompts: int,
    shots: int,
    batch_size: int,
    rng: np.random.Generator,
    progress: bool = False,
) -> torch.Tensor:
    """Running mean of every head's last-token output over many-shot prompts: (L*H, head_dim)."""
    from tqdm.auto import tqdm

    queries = [train[i] for i in rng.choice(len(train), min(prompts, len(train)), replace=False)]
    all_prompts = [task.prompt(sample_demos(train, q, shots, rng), q) for q in queries]
    dist = distributed.current()
    total = torch.zeros(lmm.heads.num_layers * lmm.heads.num_heads, lmm.heads.head_dim)
    batches = list(dist.batches(len(all_prompts), batch_size))
    for _, start, end in tqdm(batches, desc="MTV means", disable=not progress or not dist.is_main):
        total += record_prompts(lmm, all_prompts[start:end]).sum(0)  # each rank sums its batches
    return dist.all_sum(total) / len(all_prompts)


def mtv_bank(means: torch.Tensor, shifts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MTV's two arms per head from its means (L*H, D): arm 0 leaves the head alone (NaN),
    arm 1 writes its mean: (L*H, 2, D). With ``shifts`` (L*H, D), arm 1 instead keeps the
    head's own output and adds its shift (steering, not replacement): (values, shifts)."""
    own = torch.full_like(means, float("nan"))
    if shifts is None:
        return torch.stack([own, means], 1), None
    return torch.stack([own, own], 1), torch.stack([torch.zeros_like(shifts), shifts], 1)


def fit_mtv(
    lmm: LMM,
    train: Sequence[Example],
    config: MTVConfig | None = None,
    task: Task | None = None,
    progress: bool = True,
    means: torch.Tensor | None = None,
    shifts: torch.Tensor | None = None,
) -> TaskVectors:
    """MTV on ``train``. ``means`` (L*H, head_dim), when given, are the mean many-shot
    activations already recorded elsewhere (e.g. the mean of an STV scan's with-context
    activations, which is the same quantity), so they are not recorded twice. ``shifts``
    (L*H, head_dim), e.g. a scan's mean deltas: the kept heads get their own output plus
    their shift instead of their mean (not in MTV; the shift arm's counterpart)."""
    config = config or MTVConfig()
    task = task or task_for(train)
    rng = np.random.default_rng(config.seed)
    t = time.perf_counter()
    if means is None:
        means = mean_activations(lmm, train, task, config.prompts, config.shots, config.batch_size, rng, progress)
    t_means = time.perf_counter() - t
    locations = lmm.heads.all_locations()
    bank, added = mtv_bank(means, shifts)
    reward = bank_rewards(
        lmm,
        train,
        task,
        locations,
        bank,
        config.queries_per_step,
        rng,
        objective=config.objective,
        shifts=added,
        steps=config.steps,
    )
    t = time.perf_counter()
    search = reinforce(
        reward,
        len(locations),
        2,
        config.steps,
        config.samples,
        config.lr,
        seed=config.seed,
        progress=progress,
        init_logits=torch.tensor([0.0, config.init_logit]),
    )
    t_search = time.perf_counter() - t
    keep_prob = search.probabilities[:, 1].clamp(1e-3, 1 - 1e-3)
    gen = torch.Generator().manual_seed(config.seed)
    masks = torch.bernoulli(keep_prob.expand(config.final_masks, -1), generator=gen).long()
    _, best_mask = select_best(  # highest mean log-prob = lowest cost (by default)
        lmm,
        train,
        task,
        locations,
        bank,
        [],
        0,
        config.final_items,
        config.seed,
        rng,
        fixed=list(masks),
        objective=config.objective,
        recheck=config.final_recheck,
        shifts=added,
    )
    best = best_mask.bool()
    loc_tensor = torch.tensor(locations, dtype=torch.long)
    cfg = TaskVectorsConfig.for_fit(lmm, "mtv", config, task, train)
    written = means[best] if shifts is None else torch.full_like(means[best], float("nan"))
    steer = None if shifts is None else shifts[best]
    vectors = TaskVectors(loc_tensor[best], written, config=cfg, probabilities=search.probabilities, shifts=steer)
    vectors.log = FitLog(None, locations, bank, search, {"means": t_means, "search": t_search})
    return vectors
