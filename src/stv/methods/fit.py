"""STV end to end: scan -> bank -> REINFORCE -> TaskVectors."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..config import STVConfig
from ..data.example import Example
from ..errors import StvError
from ..hooks.headmap import Location
from ..models import LMM
from ..runs.fingerprint import data_fingerprint
from ..tasks import Task, sample_demos, task_for
from ..vectors import TaskVectors, TaskVectorsConfig
from .bank import build_bank
from .continuation import search_continuation, with_continuation
from .log import FitLog
from .refine import refined, split_held_out
from .reinforce import ReinforceResult, reinforce
from .reward import bank_rewards
from .scan import ScanResult, sensitivity_scan
from .schedule import choose_schedule
from .select import select_best


def scan_pairs(train: Sequence[Example], task: Task, pairs: int, shots: int, rng: np.random.Generator):
    """``pairs`` (zero-shot prompt, ``shots``-shot prompt) pairs of random training queries."""
    queries = [train[i] for i in rng.choice(len(train), min(pairs, len(train)), replace=False)]
    return [(task.prompt([], q), task.prompt(sample_demos(train, q, shots, rng), q)) for q in queries]


def fit(
    lmm: LMM,
    train: Sequence[Example],
    config: STVConfig | None = None,
    task: Task | None = None,
    progress: bool = True,
    workdir=None,
) -> TaskVectors:
    """Fit sensitivity-aware task vectors on ``train`` (examples with reference answers) under
    ``config`` (default ``STVConfig()``, as ``stv fit``). What the fit produced besides the
    vectors (scan, bank, search, timings) is on the result's ``log``."""
    config = (config or STVConfig()).resolved(lmm)
    task = task or task_for(train)
    config.validate(lmm, len(train))
    rng = np.random.default_rng(config.seed)
    if not config.needs_scan(lmm.heads.num_layers * lmm.heads.num_heads):
        artifact, state = fit_without_search(lmm, train, config, task, rng, progress)
        artifact.log = state
        return artifact
    t = time.perf_counter()
    pairs = scan_pairs(train, task, config.pairs, config.shots, rng)
    key = json.dumps(
        [
            lmm.name,
            lmm.weights_fingerprint(),
            data_fingerprint(train),
            asdict(task),
            config.pairs,
            config.shots,
            config.seed,
        ]
    )
    scan = sensitivity_scan(lmm, pairs, config.batch_size, workdir=workdir, progress=progress, key=key)
    scan_seconds = time.perf_counter() - t
    artifact, state = fit_at(
        lmm, train, config, task, scan, scan.top_k(config.top_k, config.sensitivity), rng, progress
    )
    state.timings = {"scan": scan_seconds, **state.timings}
    artifact.log = state
    return artifact


def fit_without_search(
    lmm: LMM, train: Sequence[Example], config: STVConfig, task: Task, rng: np.random.Generator, progress: bool = True
) -> tuple[TaskVectors, FitLog]:
    """A fit with no head search: every head keeps its own output and refinement learns a
    correction there from zero (no scan, no bank: nothing would read them)."""
    every = lmm.heads.all_locations()
    nothing = torch.full((len(every), lmm.heads.head_dim), float("nan"))  # (L*H, D): each head's own output
    start = TaskVectors(
        torch.tensor(every, dtype=torch.long),
        nothing,
        config=TaskVectorsConfig.for_fit(lmm, "stv", config, task, train).with_(
            arms={"centroid": 0, "mean": 0, "shift": 0, "keep": len(every)}
        ),
    )
    timings: dict[str, float] = {}
    artifact = _after_search(lmm, start, train, task, config, every, rng, timings, progress)
    return artifact, FitLog(None, every, torch.zeros(0), None, timings)


RESTART_SEED_STRIDE = 7_919  # REINFORCE seed of restart r: seed + r * stride


@dataclass(frozen=True)
class ArmLayout:
    """The columns of every location's bank: the k-means centroids, then the mean with-context
    activation (MTV's vector) with ``mean_arm``, then the head's own output plus the scan's mean
    delta with ``shift_arm``, then "leave this head alone" last with ``keep_arm``. One place
    says where each arm is, for building, prior, counts and selection."""

    centroids: int
    mean: bool
    shift: bool
    keep: bool

    @classmethod
    def of(cls, config: STVConfig, arms: int) -> "ArmLayout":
        """The layout of a bank with ``arms`` columns fitted under ``config``."""
        extra = config.keep_arm + config.mean_arm + config.shift_arm
        return cls(arms - extra, config.mean_arm, config.shift_arm, config.keep_arm)

    @property
    def mean_index(self) -> int:
        """The mean arm's column (meaningful with ``mean``)."""
        return self.centroids

    @property
    def shift_index(self) -> int:
        """The shift arm's column (meaningful with ``shift``)."""
        return self.centroids + self.mean

    @property
    def keep_index(self) -> int:
        """The keep arm's column, the last (meaningful with ``keep``)."""
        return self.centroids + self.mean + self.shift

    @staticmethod
    def extend(
        centroids: torch.Tensor, activations: torch.Tensor, config: STVConfig, shifts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, M, D) centroids -> (the bank (K, A, D) of values written, NaN = the head's own
        output; with ``shift_arm`` the (K, A, D) shifts added after them, zero but at the shift
        arm). ``activations`` (T, K, D) give the mean arm, ``shifts`` (K, D) the shift arm."""
        bank = centroids
        if config.mean_arm:
            bank = torch.cat([bank, activations.mean(0)[:, None]], 1)
        own = bank.new_full((bank.shape[0], 1, bank.shape[2]), float("nan"))  # (K, 1, D) "write nothing"
        if config.shift_arm:
            bank = torch.cat([bank, own], 1)
        if config.keep_arm:
            bank = torch.cat([bank, own], 1)
        if not config.shift_arm:
            return bank, None
        if shifts is None:
            raise StvError("the shift arm needs the scan's mean deltas")
        added = torch.zeros_like(bank)
        added[:, ArmLayout.of(config, bank.shape[1]).shift_index] = shifts
        return bank, added


def _prior_logits(config: STVConfig, arms: int, locations: int = 1) -> torch.Tensor | None:
    """With ``arm_prior``, REINFORCE starts where MTV starts (most heads left alone) instead of
    uniform over the arms: P(keep) = 1/2, P(mean) = 1/4 (with the shift arm, the two share that
    1/4), the centroids share the rest. With
    ``ranked_prior`` too, P(keep) goes from 1/4 at the first (most sensitive) location to 3/4 at
    the last, so the scan's ranking says where to start writing: (locations, arms) logits."""
    if not config.arm_prior:
        return None
    layout = ArmLayout.of(config, arms)
    keep = torch.full((locations,), 0.5 if layout.keep else 0.0)
    if layout.keep and config.ranked_prior and locations > 1:
        keep = 0.25 + 0.5 * torch.arange(locations) / (locations - 1)
    rest = 1 - keep  # (L,) shared by the centroids and the mean/shift arms
    whole = layout.mean + layout.shift  # arms of a whole head's mean: MTV's vector, or the steering shift
    share = rest * (0.5 if layout.centroids else 1.0) if whole else torch.zeros_like(rest)  # no centroids: MTV's start
    probs = torch.empty(locations, arms)
    probs[:, : layout.centroids] = ((rest - share) / max(1, layout.centroids))[:, None]
    if layout.mean:
        probs[:, layout.mean_index] = share / whole
    if layout.shift:
        probs[:, layout.shift_index] = share / whole
    if layout.keep:
        probs[:, layout.keep_index] = keep
    return probs.log()


def fit_at(
    lmm: LMM,
    train: Sequence[Example],
    config: STVConfig,
    task: Task,
    scan: ScanResult,
    locations: Sequence[Location],
    rng: np.random.Generator,
    progress: bool = True,
) -> tuple[TaskVectors, FitLog]:
    """Bank + REINFORCE at given locations (STV's top-K, or random heads for the ablation)."""
    locations = list(locations)
    timings = {}
    judge = split_held_out(train, rng) if config.refine and config.judge_apart else None  # (held out, the rest)
    pool = train if judge is None else judge[1]  # what the search and its final selection draw from
    t = time.perf_counter()
    activations = scan.activations_at(locations)  # (T, K, D)
    bank, shifts = ArmLayout.extend(
        build_bank(activations, config.clusters, config.seed, progress),
        activations,
        config,
        scan.shifts_at(locations) if config.shift_arm else None,
    )
    timings["bank"] = time.perf_counter() - t
    t = time.perf_counter()
    searches = [
        _search(lmm, pool, task, locations, bank, shifts, config, rng, restart, progress)
        for restart in range(config.restarts)
    ]
    timings["reinforce"] = time.perf_counter() - t
    search, choice = searches[0], searches[0].choice
    if config.final_samples or config.restarts > 1:
        t = time.perf_counter()
        search, choice = select_final(lmm, pool, task, locations, bank, searches, config, rng, shifts)
        timings["select"] = time.perf_counter() - t
    rows = torch.arange(len(locations))
    vectors = bank[rows, choice]  # (K, D) NaN: the head's own output
    added = None if shifts is None else shifts[rows, choice]  # (K, D)
    kept = ~torch.isnan(vectors).any(-1)  # locations whose best arm is "leave as is" are dropped
    if added is not None:
        kept |= added.ne(0).any(-1)
    loc_tensor = torch.tensor(locations, dtype=torch.long)
    artifact = TaskVectors(
        loc_tensor[kept],
        vectors[kept],
        config=TaskVectorsConfig.for_fit(lmm, "stv", config, task, train).with_(
            arms=arm_counts(choice, bank.shape[1], config)
        ),
        bank=torch.nan_to_num(bank),
        probabilities=search.probabilities,
        shifts=None if added is None else added[kept],
    )
    artifact = _after_search(lmm, artifact, train, task, config, locations, rng, timings, progress, judge)
    return artifact, FitLog(scan, locations, bank, search, timings)


def _after_search(
    lmm: LMM,
    artifact: TaskVectors,
    train: Sequence[Example],
    task: Task,
    config: STVConfig,
    locations: Sequence[Location],
    rng: np.random.Generator,
    timings: dict[str, float],
    progress: bool,
    judge: tuple[list[Example], list[Example]] | None = None,
) -> TaskVectors:
    """The stages after the search, each timed into ``timings``: gradient refinement (judged
    on ``judge``'s held-out queries, trained on the rest, when the search was kept from them),
    continuation vectors (means, or searched) and the schedule choice."""
    if config.refine:
        t = time.perf_counter()
        artifact = refined(lmm, artifact, train, task, config, locations, rng, progress, judge)
        timings["refine"] = time.perf_counter() - t
    if config.continuation:
        t = time.perf_counter()
        artifact = with_continuation(
            artifact, lmm, train, task, config.continuation, config.pairs, config.shots, config.batch_size, config.seed
        )
        timings["continuation"] = time.perf_counter() - t
    if config.continuation_search:
        t = time.perf_counter()
        artifact = search_continuation(artifact, lmm, train, task, config, rng, progress)
        timings["continuation_search"] = time.perf_counter() - t
    if config.schedule_items:
        t = time.perf_counter()
        artifact = choose_schedule(lmm, artifact, train, task, config.schedule_items, rng)
        timings["schedule"] = time.perf_counter() - t
    return artifact


def arm_counts(choice: torch.Tensor, arms: int, config: STVConfig) -> dict[str, int]:
    """How many locations got a k-means centroid, the mean (MTV's vector), the shift (their own
    output plus the mean delta) or were left alone: whether the fit used what makes STV differ
    from MTV (recorded in the artifact)."""
    layout = ArmLayout.of(config, arms)
    counts = {"centroid": int((choice < layout.centroids).sum())}
    for arm, there in (("mean", layout.mean), ("shift", layout.shift), ("keep", layout.keep)):
        counts[arm] = int((choice == getattr(layout, f"{arm}_index")).sum()) if there else 0
    return counts


def _search(lmm, train, task, locations, bank, shifts, config: STVConfig, rng, restart: int, progress: bool):
    """One REINFORCE run over the bank (restart r: its own seed, its own draws of queries)."""
    reward = bank_rewards(
        lmm,
        train,
        task,
        locations,
        bank,
        config.queries_per_step,
        rng,
        config.prefix_pool,
        objective=config.objective,
        shifts=shifts,
        steps=config.steps,
    )
    return reinforce(
        reward,
        len(locations),
        bank.shape[1],
        config.steps,
        config.samples,
        config.lr,
        seed=config.seed + RESTART_SEED_STRIDE * restart,
        progress=progress,
        init_logits=_prior_logits(config, bank.shape[1], len(locations)),
    )


def select_final(
    lmm: LMM,
    train: Sequence[Example],
    task: Task,
    locations: Sequence[Location],
    bank: torch.Tensor,
    searches: Sequence[ReinforceResult],
    config: STVConfig,
    rng: np.random.Generator,
    shifts: torch.Tensor | None = None,
) -> tuple[ReinforceResult, torch.Tensor]:
    """STV's final selection (:func:`select_best` under ``config``): (the search the winner
    came from, its choice (K,)). With ``final_keep`` and a keep arm, writing nothing at all
    competes too (the zero-shot model; returned with the first search's policy)."""
    layout = ArmLayout.of(config, bank.shape[1])
    nothing = [torch.full((len(locations),), layout.keep_index)] if config.final_keep and layout.keep else []
    origin, choice = select_best(
        lmm,
        train,
        task,
        locations,
        bank,
        searches,
        config.final_samples,
        config.final_items,
        config.seed + 1,
        rng,
        fixed=nothing,
        objective=config.final_objective,
        recheck=config.final_recheck,
        shifts=shifts,
    )
    return searches[origin or 0], choice
