"""Settings of a fit, importable without torch (the command line's help reads them).

``STVConfig.paper()`` is the paper's method as first read; ``STVConfig.plus()`` is ours.
Where the paper is ambiguous each reading is an option here, measured by ``stv compare``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, get_args

from .errors import StvError
from .hooks.policy import POLICIES, Policy

if TYPE_CHECKING:
    from .models import LMM

Sensitivity = Literal["l2", "mean_delta", "consistency", "relative"]
SENSITIVITIES: tuple[Sensitivity, ...] = get_args(Sensitivity)
Objective = Literal["log_prob", "hits", "margin"]  # what a search or a final selection maximises
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
RefineHeads = Literal["written", "every"]  # where gradient refinement learns a correction
REFINE_STEPS = 180  # stv+'s gradient steps of refinement (v9; v8 took 60: the lab's low seeds had not converged)
REFINE_HEADS: tuple[RefineHeads, ...] = get_args(RefineHeads)
RefineObjective = Literal["first_token", "answer"]  # which tokens refinement's cross-entropy covers
REFINE_OBJECTIVES: tuple[RefineObjective, ...] = get_args(RefineObjective)
RefineStart = Literal["search", "zero", "both", "steer", "all"]  # what refinement's correction is added to
REFINE_STARTS: tuple[RefineStart, ...] = get_args(RefineStart)


# help of each STVConfig field as a command-line flag (what it does, its unit)
FIELD_HELP: dict[str, str] = {
    "top_k": "K, heads to write (count; 0 or unset: from the model, every head with a keep arm, else a quarter, 8-64)",
    "clusters": "M, k-means candidates per head (count; 0 with the mean or shift arm: the centroids ablated)",
    "pairs": "T, query/context pairs of the sensitivity scan (prompts; also the bank's activations)",
    "shots": "demonstrations per scan context (count)",
    "steps": "REINFORCE steps (optimiser updates)",
    "samples": "joint choices sampled per REINFORCE step (count)",
    "lr": "Adam learning rate of the policy logits",
    "queries_per_step": "zero-shot training queries scored per REINFORCE step (count)",
    "sensitivity": "head ranking: l2 (paper: mean ||delta||), mean_delta (||mean delta||), consistency, relative",
    "prefix_pool": "draw each step's queries from this many fixed groups with cached prefixes (0: fresh queries)",
    "keep_arm": "add a 'leave this head alone' arm to every head's bank",
    "mean_arm": "add the mean with-context activation (MTV's vector) as an arm",
    "shift_arm": "add an arm that adds the mean change the demonstrations make to the head's own output (a steering vector) instead of replacing it",
    "arm_prior": "start REINFORCE at P(keep) 1/2, P(mean) 1/4 instead of uniform",
    "ranked_prior": "with arm_prior: P(keep) from 1/4 (most sensitive head) to 3/4 (least) instead of 1/2 everywhere",
    "restarts": "independent REINFORCE runs whose argmaxes and draws compete in the final selection (count)",
    "final_samples": "draws from the trained policy scored against its argmax at the end (count; 0: argmax)",
    "final_items": "training queries that score those final candidates (count)",
    "final_recheck": "re-score the best quarter of the final candidates on this many more training queries; the best over all wins (count; 0: off)",
    "objective": "what REINFORCE maximises on its queries: log_prob (the answer's first token; paper, MTV), margin (its log-prob minus the best other token's) or hits (queries whose top token is the answer's; ties by log_prob)",
    "final_objective": "what the final selection maximises: log_prob, margin or hits, as --objective",
    "final_keep": "with keep_arm: writing nothing at all also competes in the final selection",
    "continuation": "write continuation vectors at generated tokens 1..T (tokens; needs prompt_last)",
    "continuation_objective": "what the continuation search and its final selection maximise on the token after the first: log_prob, margin or hits",
    "continuation_search": "REINFORCE steps of a second search, over every head, for the first generated token (needs prompt_last; 0: none)",
    "refine": "gradient steps of a correction added at the heads after the search, on the answer's cross-entropy (--refine-objective); judged on held-out training queries, kept only if better (steps; 0: none)",
    "refine_lr": "Adam learning rate of that correction, in units of each head's typical output size",
    "refine_heads": "where the correction is learned: written (heads the search writes) or every (all K locations, unwritten ones from their own output)",
    "refine_start": "what the correction is added to: search (the searched vectors), zero (every head's own output: the search's result is dropped), steer (the searched vectors as steering: each written head keeps its own output, moved by the vector minus its mean output on zero-shot prompts), both (search and zero) or all (search, zero and steer); several starts are judged on the same held-out queries against the search's result and the best is kept",
    "steer_margin": "with refine_start all: the steer start replaces the best of the others only when it answers at least this many more held-out queries (count; 0: any higher score, log-prob tie-breaks included)",
    "unreplace": "with refine and held-out judging (refine_start other than search, or judge_apart): after refinement each head that replaces its output is turned, one at a time, into steering (own output + its written value - its mean own output) where that answers at least one more held-out query",
    "judge_apart": "with refine: hold the 64 training queries that judge refinement out of the search and its final selection too, so the search's result is not judged on queries it was chosen on",
    "refine_objective": "the cross-entropy refinement lowers and the held-out score it keeps: first_token (the answer's first token) or answer (every token of the answer and the line break that ends it, teacher-forced under the fitted schedule)",
    "policy": "insertion schedule: every_step (every generated token) or prompt_last (the prompt's last token)",
    "schedule_items": "training queries whose generated answers choose the schedule after the fit (count; 0: keep --policy)",
    "batch_size": "prompts per forward pass (count)",
    "seed": "seed of every random draw (queries, demonstrations, k-means, REINFORCE)",
}
# the fields the sensitivity scan reads (`stv scan` takes only these)
SCAN_FIELDS: tuple[str, ...] = ("pairs", "shots", "sensitivity", "top_k", "batch_size", "seed")


def default_top_k(heads: int, keep_arm: bool) -> int:
    """K when none is given (``top_k`` 0). With a keep arm REINFORCE can leave heads alone, and
    more heads helped on every model measured: SmolLM2 68.1 / 72.8 / 79.2 at K = 16 / 32 / 64
    of 270 (stv+ v1) and 85.3 / 87.5 at K = 64 / 256 (stv+, 3 seeds); Gemma-3 7.8 -> 92.2 and
    20.0 -> 83.3 at K = 16 -> 64 of 72; the lab 79.9 -> 80.0 / 82.5 (two runs) at K = 8 -> 16
    of 16. Every head, then.
    Without one every chosen head is overwritten and the paper's reading collapsed at K = 64 on
    SmolLM2 (26.2 at 16, 4.7 at 64): a quarter of the heads, 8 to 64."""
    if keep_arm:
        return heads
    return min(heads, 64, max(8, round(heads / 4)))


@dataclass
class STVConfig:
    """Defaults from the STV paper (arXiv 2511.08246: K = 64-300, M = 32, argmax after REINFORCE)
    and MTV's public code (Huang et al. 2024: Adam lr 0.1, 600 steps x 32 samples, first answer
    token as the reward)."""

    top_k: int = 64  # 0: from the model (default_top_k)
    clusters: int = 32
    pairs: int = 100  # T query/context pairs of the scan (and bank size)
    shots: int = 4  # S demonstrations per context
    steps: int = 600
    samples: int = 32
    lr: float = 0.1
    queries_per_step: int = 1  # zero-shot training queries per REINFORCE step (MTV: 1)
    objective: Objective = "log_prob"  # REINFORCE's reward on those queries (MTV: log_prob)
    sensitivity: Sensitivity = "l2"  # how heads are ranked: l2 (paper), mean_delta, consistency, relative
    prefix_pool: int = 0  # >0: draw each step's queries from this many fixed groups whose prefixes are cached once
    keep_arm: bool = False  # add a "leave the head as it is" arm to every location (not in the paper)
    mean_arm: bool = False  # add the mean with-context activation (MTV's vector) as an arm (not in the paper)
    shift_arm: bool = False  # add an arm "own output + mean delta" (steering, not replacement; not in the paper)
    arm_prior: bool = False  # start REINFORCE at P(keep)=1/2, P(mean)=1/4 (MTV's start), not uniform (not in the paper)
    ranked_prior: bool = False  # with arm_prior: P(keep) rises with the sensitivity rank, 1/4 -> 3/4 (not in the paper)
    restarts: int = (
        1  # REINFORCE runs (each with its own seed); the final selection picks across them (not in the paper)
    )
    final_samples: int = 0  # >0: also draw this many choices from the trained policy and keep the best of them and the argmax (MTV's last step; not in the paper)
    final_items: int = 32  # training queries that score those final candidates
    final_recheck: int = 0  # >0: the best quarter re-scored on this many more queries (not in the paper)
    final_objective: Objective = "log_prob"  # "hits": top-token accuracy, ties by log-prob (not in the paper)
    final_keep: bool = False  # with keep_arm: "write nothing" is a final candidate too (not in the paper)
    continuation: int = (
        0  # >0: also write continuation vectors at generated tokens 1..T (prompt_last; not in the paper)
    )
    continuation_search: int = (
        0  # >0: search which heads get their many-shot mean at the first generated token (not in the paper)
    )
    continuation_objective: Objective = "log_prob"  # that search's reward and final criterion
    refine: int = 0  # >0: gradient steps of a correction at the chosen heads (methods/refine.py; not in the paper)
    refine_lr: float = 0.05
    refine_heads: RefineHeads = "written"
    refine_objective: RefineObjective = "first_token"
    refine_start: RefineStart = "search"
    steer_margin: int = 0  # refine_start all: steering must answer this many more held-out queries to be kept
    judge_apart: bool = False  # with refine: the judge's queries kept from the search too (not in the paper)
    unreplace: bool = (
        False  # with refine: replaced heads turned into steering where held-out queries gain (not in the paper)
    )
    policy: Policy = "every_step"
    schedule_items: int = (
        0  # >0: generate this many training answers under each schedule and keep the better (not in the paper)
    )
    batch_size: int = 8
    seed: int = 0
    variant: str = "paper"  # the preset these settings started from (recorded in artifacts)

    @classmethod
    def preset(cls, name: str, **overrides) -> "STVConfig":
        """``"paper"`` or ``"stv+"``, with ``overrides`` winning over the preset's own settings."""
        presets = {"paper": cls.paper, "stv+": cls.plus, "fast": cls.fast, "forward": cls.forward}
        if name not in presets:
            raise StvError(f"unknown STV variant {name!r}; choose from {', '.join(presets)}")
        return presets[name](**overrides)

    @classmethod
    def fast(cls, **overrides) -> "STVConfig":
        """No head search: a correction learned by gradient at every head's last-token output
        from zero (the answer line's cross-entropy, 60 steps of 16 queries, the best held-out
        step kept), inserted at the prompt's last token. Needs a backward pass; no scan."""
        return cls.plus(
            **{
                "steps": 0,
                "restarts": 1,
                "final_samples": 0,
                "final_recheck": 0,
                "continuation_search": 0,
                "schedule_items": 0,
                "refine": 60,
                "refine_start": "zero",
                "steer_margin": 0,
                "variant": "fast",
                **overrides,
            }
        )

    @classmethod
    def forward(cls, **overrides) -> "STVConfig":
        """stv+'s search with forward passes only (no refinement, so no backward pass and
        memory as at inference): one REINFORCE run, its final selection on 32 queries, the
        search for the first generated token and the schedule check."""
        return cls.plus(**{"refine": 0, "restarts": 1, "final_recheck": 0, "variant": "forward", **overrides})

    @classmethod
    def paper(cls, **overrides) -> "STVConfig":
        """The paper's method as first read: heads ranked by mean ||delta|| (L2), a k-means bank
        only, every head overwritten, MTV's insertion at every generated token."""
        return cls(
            **{
                "sensitivity": "l2",
                "top_k": 0,  # from the model: a quarter of the heads, 8 to 64 (the paper's K on 270)
                "keep_arm": False,
                "mean_arm": False,
                "policy": "every_step",
                "variant": "paper",
                **overrides,
            }
        )

    @classmethod
    def plus(cls, **overrides) -> "STVConfig":
        """``stv+``, our variant: heads ranked by ||mean delta|| (a shift consistent across
        queries, not answer-specific), the bank extended by the mean activation and a "leave
        the head alone" arm so REINFORCE can prune heads, REINFORCE started where MTV starts
        (most heads left alone), rewarded by hits (queries whose top token is the answer's,
        ties by log-prob: the log-prob also rewards mass on wrong answers of the task's
        format; the continuation search below keeps the log-prob, whose hits lost one Gemma-3
        seed's stop token), fresh training queries at every step, three independent REINFORCE runs whose
        argmaxes and 10 draws each compete with writing nothing on 32 training queries at
        the end, the best quarter judged again on 224 more (the best of ~30 on 32 is luck),
        insertion at the prompt's last token (multi-token answers are not
        overwritten token after token), a second search for the first generated token (where
        a zero-shot query decides whether to stop), and the schedule checked against every
        token's insertion on training answers. K defaults to every head (``top_k`` 0): the
        keep arm decides which to write. Since v7 the heads then get a correction learned
        by gradient (``refine``, kept only where held-out training queries gain), the largest
        single gain measured: SmolLM2 89.2 -> 96.7 first token (compare24). Since v8 it is
        trained on every token of the answer (exact match: Gemma-3 capitalize 51 -> 92 from
        zero), at every head, from the search's choice and from zero (the searched vectors
        are a worse start on real models' capitalize, the only start on the lab's mapping
        tasks), the better start on held-out queries kept (README, thirteenth round). Since v9
        a third start, the searched vectors as steering, competes too but is kept only when it
        answers 2 more held-out queries, and refinement takes three times v8's steps: over twenty
        lab seeds 96.8 +- 1.0 / 97.9 +- 0.4 on the mapping tasks against v8's 93.0 +- 4.4 /
        94.1 +- 5.0, level with v8 on the real models to within a query per fit (rounds 16-18)."""
        return cls(
            **{
                "sensitivity": "mean_delta",
                "keep_arm": True,
                "mean_arm": True,
                "arm_prior": True,
                "final_samples": 10,
                "objective": "hits",
                "final_objective": "hits",
                "final_keep": True,
                "final_recheck": 224,  # with final_items 32: the shortlist judged on 256 queries
                "queries_per_step": 2,
                "prefix_pool": 0,
                "restarts": 3,
                "continuation_search": overrides.get("steps", cls.steps),  # as many steps as the first search
                "schedule_items": 24,
                "refine": REFINE_STEPS,
                "refine_heads": "every",
                "refine_objective": "answer",
                "refine_start": "all",
                "steer_margin": 2,
                "top_k": 0,
                "policy": "prompt_last",
                "variant": "stv+",
                **overrides,
            }
        )

    def needs_scan(self, heads: int) -> bool:
        """Whether a fit under these settings reads the sensitivity scan: not when it searches
        nothing (no REINFORCE step) and refines a correction from zero at every one of the
        model's ``heads``."""
        searches = self.steps > 0 or self.continuation or self.continuation_search
        from_zero = self.refine > 0 and self.refine_start == "zero" and self.refine_heads == "every"
        return bool(searches) or not from_zero or self.top_k not in (0, heads)

    def resolved(self, lmm: "LMM") -> "STVConfig":
        """These settings with ``top_k`` 0 replaced by :func:`default_top_k` for ``lmm``."""
        if self.top_k:
            return self
        return replace(self, top_k=default_top_k(lmm.heads.num_layers * lmm.heads.num_heads, self.keep_arm))

    def check(self, scan_only: bool = False) -> None:
        """One clear error for a setting that cannot work with any model or data
        (``scan_only``: only what the sensitivity scan uses)."""
        problems = self._problems(scan_only)
        if problems:
            raise StvError("STVConfig: " + "; ".join(problems))

    def _problems(self, scan_only: bool = False) -> list[str]:
        problems = []
        if self.top_k < 0:
            problems.append(f"top_k={self.top_k} must be >= 0 (0: chosen from the model)")
        for name, low in (("samples", 1), ("pairs", 1), ("batch_size", 1), ("steps", 0), ("seed", 0)):
            if getattr(self, name) < low:
                problems.append(f"{name}={getattr(self, name)} (--{name.replace('_', '-')}) must be >= {low}")
        for name in ("lr", "refine_lr"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                problems.append(f"{name}={value} (--{name.replace('_', '-')}) must be a finite number > 0")
        if self.clusters < 0 or (self.clusters == 0 and not (self.mean_arm or self.shift_arm)):
            problems.append(
                f"clusters={self.clusters}: a bank needs >= 1 k-means candidate, or 0 with the mean arm (--mean-arm) "
                "or the shift arm (--shift-arm)"
            )
        if self.shots < 1:
            problems.append(f"shots={self.shots}: the scan's contexts need at least 1 demonstration (--context-shots)")
        if self.clusters > self.pairs and not scan_only:
            problems.append(
                f"clusters={self.clusters} exceeds pairs={self.pairs}: k-means of {self.pairs} activations "
                f"gives at most {self.pairs} candidates; lower --clusters or raise --pairs"
            )
        if self.final_samples < 0 or self.final_items < 1 or self.restarts < 1 or self.final_recheck < 0:
            problems.append("final_samples and final_recheck must be >= 0, final_items >= 1 and restarts >= 1")
        if self.continuation_search < 0 or (
            self.continuation_search and (self.policy != "prompt_last" or self.continuation)
        ):
            problems.append(
                f"continuation_search={self.continuation_search} must be >= 0, and > 0 only with policy prompt_last "
                "and without --continuation"
            )
        if self.schedule_items < 0:
            problems.append(f"schedule_items={self.schedule_items} must be >= 0")
        if self.continuation < 0 or (self.continuation and self.policy != "prompt_last"):
            problems.append(f"continuation={self.continuation} must be >= 0, and > 0 only with policy prompt_last")
        if self.final_keep and not self.keep_arm:
            problems.append(
                "final_keep needs keep_arm (writing nothing is the keep arm everywhere): add --keep-arm or --no-final-keep"
            )
        for name in ("objective", "final_objective", "continuation_objective"):
            if getattr(self, name) not in OBJECTIVES:
                problems.append(f"{name}={getattr(self, name)!r} must be one of {', '.join(OBJECTIVES)}")
        if (
            self.refine < 0
            or self.steer_margin < 0
            or self.refine_heads not in REFINE_HEADS
            or self.refine_objective not in REFINE_OBJECTIVES
            or self.refine_start not in REFINE_STARTS
        ):
            problems.append(
                f"refine={self.refine} and steer_margin={self.steer_margin} must be >= 0, "
                f"refine_heads={self.refine_heads!r} one of {', '.join(REFINE_HEADS)}, "
                f"refine_objective={self.refine_objective!r} one of {', '.join(REFINE_OBJECTIVES)} and "
                f"refine_start={self.refine_start!r} one of {', '.join(REFINE_STARTS)}"
            )
        if self.unreplace and not (self.refine and (self.refine_start != "search" or self.judge_apart)):
            problems.append(
                "unreplace needs refinement judged on held-out queries: --refine > 0 and --refine-start other than "
                "search (or --judge-apart)"
            )
        if self.sensitivity not in SENSITIVITIES:
            problems.append(f"sensitivity={self.sensitivity!r} must be one of {', '.join(SENSITIVITIES)}")
        if self.policy not in POLICIES:
            problems.append(f"policy={self.policy!r} must be one of {', '.join(POLICIES)}")
        return problems

    def validate(self, lmm: "LMM", n_train: int) -> None:
        """One clear error for a setting that cannot work with this model and data."""
        heads = lmm.heads.num_layers * lmm.heads.num_heads
        problems = self._problems()
        if not 0 <= self.top_k <= heads:
            problems.append(
                f"top_k={self.top_k} must be between 0 (chosen from the model) and the model's {heads} heads"
            )
        if self.clusters > n_train:
            problems.append(f"clusters={self.clusters} exceeds the {n_train} training examples the bank is built from")
        if n_train <= self.shots:
            problems.append(f"shots={self.shots} needs more than {self.shots} training examples, got {n_train}")
        if not 1 <= self.queries_per_step <= n_train:
            problems.append(f"queries_per_step={self.queries_per_step} must be between 1 and {n_train} (training size)")
        if problems:
            raise StvError("STVConfig: " + "; ".join(problems))
