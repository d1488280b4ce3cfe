"""Settings of an STV fit and its named presets, importable without torch (the command line's
help reads them). Where the paper is ambiguous each reading is an option here; which won is in
docs/research-log.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
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
REFINE_HEADS: tuple[RefineHeads, ...] = get_args(RefineHeads)
RefineObjective = Literal["first_token", "answer"]  # which tokens refinement's cross-entropy covers
REFINE_OBJECTIVES: tuple[RefineObjective, ...] = get_args(RefineObjective)
RefineStart = Literal["search", "zero", "both", "steer", "all"]  # what refinement's correction is added to
REFINE_STARTS: tuple[RefineStart, ...] = get_args(RefineStart)


STAGES = ("scan", "bank", "search", "selection", "refinement", "continuation", "schedule", "run")


def _option(default, stage: str, help: str):
    """A field with its pipeline stage and help in its metadata (the command line reads both)."""
    return field(default=default, metadata={"stage": stage, "help": help})


def field_help(name: str) -> str:
    """The help text of STVConfig field ``name``."""
    return STVConfig.__dataclass_fields__[name].metadata.get("help", "")


def flag(name: str) -> str:
    """The command-line flag of STVConfig field ``name`` (``shots`` is ``--context-shots``:
    ``--shots`` is eval's k-shot ICL)."""
    return "--context-shots" if name == "shots" else "--" + name.replace("_", "-")


# the fields the sensitivity scan reads (`stv scan` takes only these)
SCAN_FIELDS: tuple[str, ...] = ("pairs", "shots", "sensitivity", "top_k", "batch_size", "seed")


def default_top_k(heads: int, keep_arm: bool) -> int:
    """K when none is given (``top_k`` 0): with a keep arm every head, since the search can leave
    heads alone and more heads helped on every model measured; without one every chosen head is
    overwritten, and too many collapse the model, so a quarter of the heads, 8 to 64
    (docs/research-log.md, rounds one to three)."""
    if keep_arm:
        return heads
    return min(heads, 64, max(8, round(heads / 4)))


@dataclass
class STVConfig:
    """Settings of an STV fit, grouped by the stage that reads them. ``STVConfig()`` is the
    recommended default (``fast``: a correction learned at every head's last-token output, no
    scan, no search); :meth:`preset` gives ``paper``, ``stv+`` and ``forward``."""

    # scan: which heads move when demonstrations are added
    pairs: int = _option(
        100, "scan", "T, query/context pairs of the sensitivity scan (prompts; also the bank's activations)"
    )
    shots: int = _option(4, "scan", "demonstrations per scan context (count)")
    sensitivity: Sensitivity = _option(
        "mean_delta",
        "scan",
        "head ranking: l2 (paper: mean ||delta||), mean_delta (||mean delta||), consistency, relative",
    )
    top_k: int = _option(
        0, "scan", "K, heads to write (count; 0: from the model, every head with a keep arm, else a quarter, 8-64)"
    )
    # bank: the candidates each head may be written with
    clusters: int = _option(
        32, "bank", "M, k-means candidates per head (count; 0 with the mean or shift arm: the centroids ablated)"
    )
    keep_arm: bool = _option(True, "bank", "add a 'leave this head alone' arm to every head's bank")
    mean_arm: bool = _option(True, "bank", "add the mean with-context activation (MTV's vector) as an arm")
    shift_arm: bool = _option(
        False,
        "bank",
        "add an arm that adds the mean change the demonstrations make to the head's own output (a steering "
        "vector) instead of replacing it",
    )
    # search: REINFORCE over the banks
    steps: int = _option(0, "search", "REINFORCE steps (optimiser updates; 0: no search)")
    samples: int = _option(32, "search", "joint choices sampled per REINFORCE step (count)")
    lr: float = _option(0.1, "search", "Adam learning rate of the policy logits")
    queries_per_step: int = _option(2, "search", "zero-shot training queries scored per REINFORCE step (count)")
    objective: Objective = _option(
        "hits",
        "search",
        "what REINFORCE maximises on its queries: log_prob (the answer's first token; paper, MTV), margin (its "
        "log-prob minus the best other token's) or hits (queries whose top token is the answer's; ties by log_prob)",
    )
    prefix_pool: int = _option(
        0, "search", "draw each step's queries from this many fixed groups with cached prefixes (0: fresh queries)"
    )
    arm_prior: bool = _option(True, "search", "start REINFORCE at P(keep) 1/2, P(mean) 1/4 instead of uniform")
    ranked_prior: bool = _option(
        False, "search", "with arm_prior: P(keep) from 1/4 (most sensitive head) to 3/4 (least) instead of 1/2"
    )
    restarts: int = _option(
        1, "search", "independent REINFORCE runs whose argmaxes and draws compete in the final selection (count)"
    )
    # selection: the final choice among the search's candidates
    final_samples: int = _option(
        0, "selection", "draws from the trained policy scored against its argmax at the end (count; 0: argmax)"
    )
    final_items: int = _option(32, "selection", "training queries that score those final candidates (count)")
    final_recheck: int = _option(
        0,
        "selection",
        "re-score the best quarter of the final candidates on this many more training queries; the best over "
        "all wins (count; 0: off)",
    )
    final_objective: Objective = _option(
        "hits", "selection", "what the final selection maximises: log_prob, margin or hits, as --objective"
    )
    final_keep: bool = _option(
        True, "selection", "with keep_arm: writing nothing at all also competes in the final selection"
    )
    # refinement: a correction learned by gradient (a backward pass)
    refine: int = _option(
        60,
        "refinement",
        "gradient steps of a correction added at the heads, on the answer's cross-entropy (--refine-objective); "
        "judged on held-out training queries, the best step kept (steps; 0: none, no backward pass)",
    )
    refine_lr: float = _option(
        0.05, "refinement", "Adam learning rate of that correction, in units of each head's typical output size"
    )
    refine_heads: RefineHeads = _option(
        "every",
        "refinement",
        "where the correction is learned: written (heads the search writes) or every (all K locations, "
        "unwritten ones from their own output)",
    )
    refine_objective: RefineObjective = _option(
        "answer",
        "refinement",
        "the cross-entropy refinement lowers and the held-out score it keeps: first_token (the answer's first "
        "token) or answer (every token of the answer and the line break that ends it, teacher-forced)",
    )
    refine_start: RefineStart = _option(
        "zero",
        "refinement",
        "what the correction is added to: zero (every head's own output; the search's result is dropped), search "
        "(the searched vectors), steer (the searched vectors as steering: own output + vector - its mean output), "
        "both (search and zero) or all (search, zero and steer); several starts are judged on the same held-out "
        "queries and the best is kept",
    )
    steer_margin: int = _option(
        0,
        "refinement",
        "with refine_start all: the steer start wins only when it answers at least this many more held-out "
        "queries (count; 0: any higher score)",
    )
    judge_apart: bool = _option(
        False,
        "refinement",
        "hold the training queries that judge refinement out of the search and its final selection too",
    )
    unreplace: bool = _option(
        False,
        "refinement",
        "after refinement turn each replacing head, one at a time, into steering where that answers at least one "
        "more held-out query (needs held-out judging)",
    )
    # continuation: what is written at generated tokens
    continuation: int = _option(
        0, "continuation", "write continuation vectors at generated tokens 1..T (tokens; needs prompt_last)"
    )
    continuation_search: int = _option(
        0,
        "continuation",
        "REINFORCE steps of a second search, over every head, for the first generated token (needs prompt_last; "
        "0: none)",
    )
    continuation_objective: Objective = _option(
        "log_prob",
        "continuation",
        "what the continuation search and its final selection maximise on the token after the first: log_prob, "
        "margin or hits",
    )
    # schedule: when the written outputs apply
    policy: Policy = _option(
        "prompt_last",
        "schedule",
        "insertion schedule: every_step (every generated token) or prompt_last (the prompt's last token)",
    )
    schedule_items: int = _option(
        0,
        "schedule",
        "training queries whose generated answers choose the schedule after the fit (count; 0: keep --policy)",
    )
    # run
    batch_size: int = _option(8, "run", "prompts per forward pass (count)")
    seed: int = _option(0, "run", "seed of every random draw (queries, demonstrations, k-means, REINFORCE)")
    variant: str = _option("fast", "run", "the preset these settings started from (recorded in artifacts)")

    def __post_init__(self) -> None:
        problems = self._field_problems()
        if problems:
            raise StvError("STVConfig: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides) -> "STVConfig":
        """Preset ``name`` (see :data:`PRESETS`) with ``overrides`` winning over its settings."""
        if name not in PRESETS:
            raise StvError(f"unknown STV variant {name!r}; choose from {', '.join(PRESETS)}")
        settings = {**PRESETS[name], **overrides}
        return cls(**{key: linked(value, settings) for key, value in settings.items()})

    @classmethod
    def fast(cls, **overrides) -> "STVConfig":
        """The default: no head search; a correction learned by gradient at every head's
        last-token output from zero (the answer line's cross-entropy, 60 steps, the best
        held-out step kept), inserted at the prompt's last token. Needs a backward pass."""
        return cls.preset("fast", **overrides)

    @classmethod
    def forward(cls, **overrides) -> "STVConfig":
        """stv+'s search with forward passes only (memory as at inference, no gradients): one
        REINFORCE run, its final selection, the search for the first generated token and the
        schedule check."""
        return cls.preset("forward", **overrides)

    @classmethod
    def paper(cls, **overrides) -> "STVConfig":
        """The paper's method as first read: heads ranked by mean ||delta|| (L2), a k-means bank
        only, every chosen head overwritten, REINFORCE's argmax, MTV's insertion at every
        generated token (arXiv 2511.08246; MTV's lr and steps)."""
        return cls.preset("paper", **overrides)

    @classmethod
    def plus(cls, **overrides) -> "STVConfig":
        """``stv+``: ranking by ||mean delta||, a bank with keep and mean arms, REINFORCE on hits
        from three starts, a rechecked final selection, a search for the first generated token,
        a schedule check, then refinement from three starts (search, zero, steering), the best
        on held-out training queries kept. The most accurate on the tasks it was tuned on, at
        about five times LoRA's fit time (docs/research-log.md)."""
        return cls.preset("stv+", **overrides)

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

    def _field_problems(self) -> list[str]:
        """Values no setting of the other fields could make work (checked on construction)."""
        problems = []
        if self.top_k < 0:
            problems.append(f"top_k={self.top_k} must be >= 0 (0: chosen from the model)")
        for name, low in _MINIMUM.items():
            if getattr(self, name) < low:
                problems.append(f"{name}={getattr(self, name)} ({flag(name)}) must be >= {low}")
        for name in ("lr", "refine_lr"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                problems.append(f"{name}={value} ({flag(name)}) must be a finite number > 0")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r} must be one of {', '.join(allowed)}")
        return problems

    def _problems(self, scan_only: bool = False) -> list[str]:
        problems = self._field_problems()
        if self.clusters == 0 and not (self.mean_arm or self.shift_arm):
            problems.append(
                "clusters=0: a bank needs >= 1 k-means candidate, or 0 with the mean arm (--mean-arm) "
                "or the shift arm (--shift-arm)"
            )
        if self.clusters > self.pairs and not scan_only:
            problems.append(
                f"clusters={self.clusters} exceeds pairs={self.pairs}: k-means of {self.pairs} activations "
                f"gives at most {self.pairs} candidates; lower --clusters or raise --pairs"
            )
        if self.continuation_search and (self.policy != "prompt_last" or self.continuation):
            problems.append(
                f"continuation_search={self.continuation_search} needs policy prompt_last and no --continuation"
            )
        if self.continuation and self.policy != "prompt_last":
            problems.append(f"continuation={self.continuation} needs policy prompt_last")
        if self.final_keep and not self.keep_arm:
            problems.append(
                "final_keep needs keep_arm (writing nothing is the keep arm everywhere): add --keep-arm or --no-final-keep"
            )
        if self.unreplace and not (self.refine and (self.refine_start != "search" or self.judge_apart)):
            problems.append(
                "unreplace needs refinement judged on held-out queries: --refine > 0 and --refine-start other than "
                "search (or --judge-apart)"
            )
        return problems

    def validate(self, lmm: "LMM", n_train: int) -> None:
        """One clear error for a setting that cannot work with this model and data."""
        heads = lmm.heads.num_layers * lmm.heads.num_heads
        problems = self._problems()
        if not 0 <= self.top_k <= heads:
            problems.append(
                f"top_k={self.top_k} must be between 0 (chosen from the model) and the model's {heads} heads"
            )
        if self.needs_scan(heads):  # a fit with no scan builds no bank and samples no context
            if self.clusters > n_train:
                problems.append(
                    f"clusters={self.clusters} exceeds the {n_train} training examples the bank is built from"
                )
            if n_train <= self.shots:
                problems.append(f"shots={self.shots} needs more than {self.shots} training examples, got {n_train}")
            if not 1 <= self.queries_per_step <= n_train:
                problems.append(
                    f"queries_per_step={self.queries_per_step} must be between 1 and {n_train} (training size)"
                )
        if problems:
            raise StvError("STVConfig: " + "; ".join(problems))


# the smallest value of each count, and the values each option takes (checked on construction)
_MINIMUM = {
    **dict.fromkeys(("samples", "pairs", "batch_size", "final_items", "restarts", "shots"), 1),
    **dict.fromkeys(
        ("steps", "seed", "final_samples", "final_recheck", "schedule_items", "clusters", "prefix_pool")
        + ("continuation", "continuation_search", "refine", "steer_margin"),
        0,
    ),
}
_CHOICES = {
    "objective": OBJECTIVES,
    "final_objective": OBJECTIVES,
    "continuation_objective": OBJECTIVES,
    "refine_heads": REFINE_HEADS,
    "refine_objective": REFINE_OBJECTIVES,
    "refine_start": REFINE_STARTS,
    "sensitivity": SENSITIVITIES,
    "policy": POLICIES,
}


def linked(value, settings: dict):
    """A preset's value: itself, or for a string ``"steps"`` / ``"3*top_k"`` (a multiple of)
    that field's value in ``settings`` (STVConfig's default where ``settings`` lacks it)."""
    match = re.fullmatch(r"(?:(\d+)\*)?(steps|top_k)", value) if isinstance(value, str) else None
    if match is None:
        return value
    factor, name = match.groups()
    return int(factor or 1) * settings.get(name, STVConfig.__dataclass_fields__[name].default)


# The presets, as the settings each changes from STVConfig()'s (the default, "fast").
_PAPER: dict = {
    "sensitivity": "l2",
    "keep_arm": False,
    "mean_arm": False,
    "steps": 600,
    "queries_per_step": 1,
    "objective": "log_prob",
    "arm_prior": False,
    "final_objective": "log_prob",
    "final_keep": False,
    "refine": 0,
    "refine_heads": "written",
    "refine_objective": "first_token",
    "refine_start": "search",
    "policy": "every_step",
    "variant": "paper",
}
_PLUS: dict = {
    "steps": 600,
    "restarts": 3,
    "final_samples": 10,
    "final_recheck": 224,  # with final_items 32: the shortlist judged on 256 queries
    "continuation_search": "steps",  # as many steps as the first search
    "schedule_items": 24,
    "refine": 180,
    "refine_start": "all",
    "steer_margin": 2,
    "variant": "stv+",
}
PRESETS: dict[str, dict] = {
    "fast": {},
    "forward": {**_PLUS, "refine": 0, "restarts": 1, "final_recheck": 0, "variant": "forward"},
    "stv+": _PLUS,
    "paper": _PAPER,
}
