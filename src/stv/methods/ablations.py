"""The paper's ablations, built from one STV fit's scan so they share its data."""

from __future__ import annotations

from dataclasses import replace as dc_replace
from typing import Sequence

import numpy as np
import torch

from ..data.example import Example
from ..models import LMM
from ..tasks import Task
from ..vectors import TaskVectors, TaskVectorsConfig
from .fit import STVConfig, fit_at
from .log import FitLog


def mean_at_top_k(state: FitLog, config: TaskVectorsConfig) -> TaskVectors:
    """Mean with-context activation at STV's top-K heads (no bank, no RL)."""
    means = state.scan.activations_at(state.locations).mean(0)
    return TaskVectors(torch.tensor(state.locations), means, config=dc_replace(config, method="stv_mean_topk"))


def nearest_to_mean(state: FitLog, config: TaskVectorsConfig) -> TaskVectors:
    """STV without RL: at each top-K head, the bank centroid closest to the mean activation."""
    means = state.scan.activations_at(state.locations).mean(0)
    bank = torch.nan_to_num(state.bank, nan=float("inf"))
    pick = (bank - means[:, None]).norm(dim=-1).argmin(-1)
    vectors = state.bank[torch.arange(len(state.locations)), pick]
    return TaskVectors(torch.tensor(state.locations), vectors, config=dc_replace(config, method="stv_no_rl"))


def random_heads(
    lmm: LMM, train: Sequence[Example], config: STVConfig, task: Task, state: FitLog, seed: int, progress: bool = False
) -> TaskVectors:
    """STV (bank + RL) at K random heads instead of the most sensitive ones."""
    rng = np.random.default_rng(seed + 10_000)
    locations = lmm.heads.random_locations(config.top_k, rng)
    vectors, _ = fit_at(lmm, train, config, task, state.scan, locations, rng, progress)
    vectors.config.method = "stv_random_heads"
    return vectors
