"""STV end to end: scan -> bank -> REINFORCE -> TaskVectors."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from .. import distributed
from ..data.example import Example
from ..heads import POLICIES, Location, Policy
from ..models import LMM
from ..tasks import Task, sample_demos, task_for
from ..vectors import TaskVectors
from .bank import build_bank
from .policy import PolicyResult, reinforce
from .scan import SENSITIVITIES, ScanResult, Sensitivity, sensitivity_scan
from ..errors import StvError
from ..fingerprint import data_fingerprint


@dataclass
class STVConfig:
    """Defaults from the paper and MTV's code (REFERENCE.md)."""

    top_k: int = 64
    clusters: int = 32
    pairs: int = 100  # T query/context pairs of the scan (and bank size)
    shots: int = 4  # S demonstrations per context
    steps: int = 600
    samples: int = 32
    lr: float = 0.1
    queries_per_step: int = 1  # zero-shot training queries per REINFORCE step (MTV: 1)
    sensitivity: Sensitivity = "l2"  # how heads are ranked: l2 (paper), mean_delta, consistency, relative
    prefix_pool: int = 0  # >0: draw each step's queries from this many fixed groups whose prefixes are cached once
    keep_arm: bool = False  # add a "leave the head as it is" arm to every location (not in the paper)
    mean_arm: bool = False  # add the mean with-context activation (MTV's vector) as an arm (not in the paper)
    policy: Policy = "every_step"
    batch_size: int = 8
    seed: int = 0
    variant: str = "paper"  # the preset these settings started from (recorded in artifacts)

    @classmethod
    def preset(cls, name: str, **overrides) -> "STVConfig":
        """``"paper"`` or ``"stv+"``, with ``overrides`` winning over the preset's own settings."""
        presets = {"paper": cls.paper, "stv+": cls.plus}
        if name not in presets:
            raise StvError(f"unknown STV variant {name!r}; choose from {', '.join(presets)}")
        return presets[name](**overrides)

    @classmethod
    def paper(cls, **overrides) -> "STVConfig":
        """The paper's method as first read: heads ranked by mean ||delta|| (L2), a k-means bank
        only, every head overwritten, MTV's insertion at every generated token."""
        return cls(**{"sensitivity": "l2", "keep_arm": False, "mean_arm": False, "policy": "every_step",
                      "variant": "paper", **overrides})

    @classmethod
    def plus(cls, **overrides) -> "STVConfig":
        """``stv+``, our variant: heads ranked by ||mean delta|| (a shift consistent across
        queries, not answer-specific), the bank extended by the mean activation and a "leave
        the head alone" arm so REINFORCE can prune heads, queries drawn from a pool of cached
        prefixes, and insertion at the prompt's last token only (multi-token answers are not
        overwritten token after token)."""
        return cls(**{"sensitivity": "mean_delta", "keep_arm": True, "mean_arm": True, "queries_per_step": 2,
                      "prefix_pool": 16, "policy": "prompt_last", "variant": "stv+", **overrides})


    def check(self, scan_only: bool = False) -> None:
        """One clear error for a setting that cannot work with any model or data
        (``scan_only``: only what the sensitivity scan uses)."""
        problems = self._problems(scan_only)
        if problems:
            raise StvError("STVConfig: " + "; ".join(problems))

    def _problems(self, scan_only: bool = False) -> list[str]:
        problems = []
        if self.clusters < 1 or self.samples < 1 or self.steps < 0 or self.pairs < 1 or self.batch_size < 1:
            problems.append("clusters, samples, pairs and batch_size must be >= 1 and steps >= 0")
        if self.shots < 1:
            problems.append(f"shots={self.shots}: the scan's contexts need at least 1 demonstration (--context-shots)")
        if self.clusters > self.pairs and not scan_only:
            problems.append(f"clusters={self.clusters} exceeds pairs={self.pairs}: k-means of {self.pairs} activations "
                            f"gives at most {self.pairs} candidates; lower --clusters or raise --pairs")
        if self.sensitivity not in SENSITIVITIES:
            problems.append(f"sensitivity={self.sensitivity!r} must be one of {', '.join(SENSITIVITIES)}")
        if self.policy not in POLICIES:
            problems.append(f"policy={self.policy!r} must be one of {', '.join(POLICIES)}")
        return problems

    def validate(self, lmm: LMM, n_train: int) -> None:
        """One clear error for a setting that cannot work with this model and data."""
        heads = lmm.heads.num_layers * lmm.heads.num_heads
        problems = self._problems()
        if not 1 <= self.top_k <= heads:
            problems.append(f"top_k={self.top_k} must be between 1 and the model's {heads} heads")
        if self.clusters > n_train:
            problems.append(f"clusters={self.clusters} exceeds the {n_train} training examples the bank is built from")
        if n_train <= self.shots:
            problems.append(f"shots={self.shots} needs more than {self.shots} training examples, got {n_train}")
        if not 1 <= self.queries_per_step <= n_train:
            problems.append(f"queries_per_step={self.queries_per_step} must be between 1 and {n_train} (training size)")
        if problems:
            raise StvError("STVConfig: " + "; ".join(problems))


@dataclass
class FitState:
    """Everything a fit produced, for reports and ablations."""

    scan: ScanResult
    locations: list[Location]
    bank: torch.Tensor
    policy: PolicyResult | None
    timings: dict[str, float]


def scan_pairs(train: Sequence[Example], task: Task, pairs: int, shots: int, rng: np.random.Generator):
    queries = [train[i] for i in rng.choice(len(train), min(pairs, len(train)), replace=False)]
    return [(task.prompt([], q), task.prompt(sample_demos(train, q, shots, rng), q)) for q in queries]


def first_token_ids(lmm: LMM, examples: Sequence[Example], task: Task) -> torch.Tensor:
    """The first token of each target answer as it continues the query prompt."""
    return torch.tensor([ids[0] for ids in lmm.answer_ids([task.continuation(e) for e in examples])])


def bank_rewards(lmm: LMM, train: Sequence[Example], task: Task, locations: Sequence[Location],
                 bank: torch.Tensor, queries_per_step: int, rng: np.random.Generator, prefix_pool: int = 0):
    """reward_fn for :func:`reinforce`: mean log-prob of the first answer token over a few
    zero-shot queries, every sample scored in one batch over a shared prefix cache.

    With ``prefix_pool`` > 0 the queries come from that many fixed groups, each prefix
    computed once and reused: a step then costs one pass over the fanned-out last tokens."""
    pool: dict[int, tuple] = {}
    groups = [[train[i] for i in rng.choice(len(train), queries_per_step, replace=False)]
              for _ in range(prefix_pool)]

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


def fit(lmm: LMM, train: Sequence[Example], config: STVConfig | None = None, task: Task | None = None,
        progress: bool = True, workdir=None) -> tuple[TaskVectors, FitState]:
    """Fit sensitivity-aware task vectors on ``train`` (examples with reference answers)."""
    config = config or STVConfig()
    task = task or task_for(train)
    config.validate(lmm, len(train))
    rng = np.random.default_rng(config.seed)
    t = time.perf_counter()
    pairs = scan_pairs(train, task, config.pairs, config.shots, rng)
    key = json.dumps([lmm.name, lmm.weights_fingerprint(), data_fingerprint(train), asdict(task), config.pairs, config.shots,
                      config.seed])
    scan = sensitivity_scan(lmm, pairs, config.batch_size, workdir=workdir, progress=progress, key=key)
    scan_seconds = time.perf_counter() - t
    artifact, state = fit_at(lmm, train, config, task, scan, scan.top_k(config.top_k, config.sensitivity), rng, progress)
    state.timings = {"scan": scan_seconds, **state.timings}
    return artifact, state


def fit_at(lmm: LMM, train: Sequence[Example], config: STVConfig, task: Task, scan: ScanResult,
           locations: Sequence[Location], rng: np.random.Generator, progress: bool = True
           ) -> tuple[TaskVectors, FitState]:
    """Bank + REINFORCE at given locations (STV's top-K, or random heads for the ablation)."""
    locations = list(locations)
    timings = {}
    t = time.perf_counter()
    activations = scan.activations_at(locations)  # (T, K, D)
    bank = build_bank(activations, config.clusters, config.seed)
    if config.mean_arm:
        bank = torch.cat([bank, activations.mean(0)[:, None]], 1)
    if config.keep_arm:
        bank = torch.cat([bank, torch.full_like(bank[:, :1], float("nan"))], 1)
    timings["bank"] = time.perf_counter() - t
    t = time.perf_counter()
    reward = bank_rewards(lmm, train, task, locations, bank, config.queries_per_step, rng, config.prefix_pool)
    policy = reinforce(reward, len(locations), bank.shape[1], config.steps, config.samples, config.lr,
                       seed=config.seed, progress=progress)
    timings["reinforce"] = time.perf_counter() - t
    vectors = bank[torch.arange(len(locations)), policy.choice]
    kept = ~torch.isnan(vectors).any(-1)  # locations whose best arm is "leave as is" are dropped
    loc_tensor = torch.tensor(locations, dtype=torch.long)
    artifact = TaskVectors(loc_tensor[kept], vectors[kept], config=artifact_config(lmm, config, task, train),
                           bank=torch.nan_to_num(bank), probabilities=policy.probabilities)
    return artifact, FitState(scan, locations, bank, policy, timings)


def artifact_config(lmm: LMM, config: STVConfig, task: Task, train: Sequence[Example]) -> dict:
    import transformers

    from .. import __version__

    fingerprint = data_fingerprint(train)
    return {"method": "stv", "model": lmm.name, "revision": lmm.revision, "family": lmm.family,
            "architecture": type(lmm.model).__name__, "weights": lmm.weights_fingerprint(),
            "num_layers": lmm.heads.num_layers,
            "num_heads": lmm.heads.num_heads, "dtype": str(lmm.dtype).replace("torch.", ""),
            "policy": config.policy, "task": asdict(task), "hyperparameters": asdict(config),
            "stv_version": __version__, "transformers_version": transformers.__version__,
            "torch_version": torch.__version__, "data_fingerprint": fingerprint, "train_examples": len(train)}
