"""The named STV variants `stv compare` and the demo fit, as data: each is a preset of
``stv.config.PRESETS`` or an earlier variant, the settings it changes, and where it was
measured (benchmark folder and the commit that added it; check that commit out to reproduce
its numbers draw for draw). Settings may be ``"steps"`` or ``"2*top_k"``: a multiple of the
run's size. A name may carry settings too, ``stv+:refine_start=all``. No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Sequence

from ..config import PRESETS, STVConfig, linked
from ..errors import StvError


@dataclass(frozen=True)
class Variant:
    based_on: str  # a preset of STVConfig or another variant
    settings: dict[str, Any] = field(default_factory=dict)
    measured: str = ""  # where its numbers come from (docs/research-log.md has the tables)


_V8_REFINE = {"refine": 60, "refine_start": "both", "steer_margin": 0}
_V7 = {**_V8_REFINE, "refine_heads": "written", "refine_objective": "first_token", "refine_start": "search"}
_V3 = {
    "objective": "log_prob",
    "final_objective": "log_prob",
    "final_keep": False,
    "continuation_objective": "log_prob",
}
_V2 = {"prefix_pool": 16, "restarts": 1, "continuation_search": 0, "schedule_items": 0}
_NO_SEARCH = {"steps": 0, "restarts": 1, "final_samples": 0, "final_recheck": 0, "continuation_search": "steps"}

VARIANTS: dict[str, Variant] = {
    # the presets themselves
    "paper": Variant("paper", measured="compare-smollm2 (1e2e894) and every demo"),
    "stv+": Variant("stv+", measured="v9: compare27-gemma3-all-long-* (f6c2830), demo-lab-v9 (c2ea23b)"),
    "fast": Variant("fast", {"steps": 0}, "cost-smollm2 (3de2db1)"),  # no search, whatever the run's steps
    "forward": Variant("forward", measured="cost-smollm2 (3de2db1)"),
    # the paper's other readings of "sensitivity"
    "relative": Variant("paper", {"sensitivity": "relative"}, "compare-smollm2 (1e2e894)"),
    "mean_delta": Variant("paper", {"sensitivity": "mean_delta"}, "compare-smollm2 (1e2e894)"),
    "consistency": Variant("paper", {"sensitivity": "consistency"}, "compare-smollm2 (1e2e894)"),
    # the cheap presets' levers
    "fast_120": Variant("fast", {"steps": 0, "refine": 120}, "cost-smollm2/levers-fast-seed0.txt"),
    "forward_lean": Variant("forward", {"continuation_search": 0, "schedule_items": 0}, "cost-smollm2/seed2"),
    # earlier stv+ versions, newest first, each from stv+ (v9) by the settings that differ
    "stv+_v8": Variant("stv+", _V8_REFINE, "demo-lab-v8 (5b96e58), rounds 13-18"),
    "stv+_both_answer": Variant("stv+_v8", measured="round 13 (v8's first name)"),
    "stv+_all": Variant("stv+_v8", {"refine_start": "all"}, "round 14"),
    "stv+_all_long": Variant("stv+_v8", {"refine_start": "all", "steer_margin": 2, "refine": 180}, "rounds 16-18"),
    "stv+_apart": Variant("stv+_v8", {"judge_apart": True}, "round 14"),
    "stv+_v7": Variant("stv+", _V7, "compare24-* (b8c3326), compare26-* (f9197ab)"),
    "stv+_refine": Variant("stv+_v7", measured="compare24-* (b8c3326)"),
    "stv+_refine_every": Variant("stv+_v7", {"refine_heads": "every"}, "compare24-* (b8c3326)"),
    "stv+_refine_answer": Variant("stv+_v7", {"refine_objective": "answer"}, "round 13"),
    "stv+_every_answer": Variant("stv+_v7", {"refine_heads": "every", "refine_objective": "answer"}, "round 13"),
    "refine_only": Variant("stv+_v7", {**_NO_SEARCH, "refine_heads": "every"}, "compare25-* (b8c3326)"),
    "refine_only_answer": Variant(
        "stv+_v7", {**_NO_SEARCH, "refine_heads": "every", "refine_objective": "answer"}, "refine-answer-probe-*.txt"
    ),
    "stv+_v6": Variant("stv+_v8", {"refine": 0}, "compare15-23 (8054314)"),
    "stv+_v5": Variant("stv+_v6", {"final_recheck": 0}, "compare14-* (0c5ac85)"),
    "stv+_no_centroids": Variant("stv+_v6", {"clusters": 0}, "compare20-* (2212e7c)"),
    "stv+_shift": Variant("stv+_v6", {"shift_arm": True}, "compare23-* (117d630)"),
    "stv+_shift_only": Variant("stv+_v6", {"clusters": 0, "mean_arm": False, "shift_arm": True}, "compare23-*"),
    "stv+_prior_draws": Variant("stv+_v6", {"steps": 0, "continuation_search": "steps"}, "compare21-* (6752691)"),
    "stv+_long": Variant(
        "stv+_v6", {"steps": "3*steps", "restarts": 1, "continuation_search": "steps"}, "compare18-* (7237382)"
    ),
    "stv+_v3": Variant("stv+_v6", _V3, "compare10-11 (eea5396)"),
    "stv+_hits": Variant("stv+_v3", {"final_objective": "hits", "final_keep": True}, "compare12-* (ebff56a)"),
    "stv+_margin": Variant(
        "stv+_v3", {"objective": "margin", "final_objective": "hits", "final_keep": True}, "compare12-* (ebff56a)"
    ),
    "stv+_hits_rl": Variant(  # v4
        "stv+_v3",
        {"objective": "hits", "final_objective": "hits", "final_keep": True, "continuation_objective": "hits"},
        "compare12-13 (ebff56a)",
    ),
    "stv+_v2": Variant("stv+_v3", _V2, "compare5-8 (d98aabf, b48f52a)"),
    "stv+_cont": Variant("stv+_v2", {"continuation": 4}, "compare8 (b48f52a)"),
    "stv+_2xk": Variant("stv+_v2", {"top_k": "2*top_k"}, "compare5-smollm2-k (d98aabf)"),
    "stv+_4xk": Variant("stv+_v2", {"top_k": "4*top_k"}, "compare5-smollm2-k (d98aabf)"),
    "stv+_ranked": Variant("stv+_v2", {"ranked_prior": True}, "compare8 (b48f52a)"),
    "stv+_auto": Variant("stv+_v2", {"schedule_items": 24}, "compare8 (b48f52a)"),
    "stv+_pool0": Variant("stv+_v2", {"prefix_pool": 0}, "compare9 (521f1b9)"),
    "stv+_r3": Variant("stv+_v2", {"prefix_pool": 0, "restarts": 3}, "compare9 (521f1b9)"),
    "stv+_next": Variant("stv+_v2", {"continuation_search": "steps"}, "compare9 (521f1b9)"),
    "stv+_next_auto": Variant("stv+_v2", {"continuation_search": "steps", "schedule_items": 24}, "compare9"),
    "stv+_r3_next_auto": Variant(
        "stv+_v2",
        {"prefix_pool": 0, "restarts": 3, "continuation_search": "steps", "schedule_items": 24},
        "compare10 (eea5396)",
    ),
    "stv+_v1": Variant("stv+_v2", {"arm_prior": False, "final_samples": 0}, "compare-smollm2, compare2 (f5be5b8)"),
    "stv+_l2": Variant("stv+_v1", {"sensitivity": "l2"}, "compare2-smollm2 (f5be5b8)"),
    "stv+_no_arms": Variant("stv+_v1", {"keep_arm": False, "mean_arm": False}, "compare2-smollm2 (f5be5b8)"),
    "stv+_every_step": Variant("stv+_v1", {"policy": "every_step"}, "compare2-smollm2 (f5be5b8)"),
    "stv+_2k": Variant("stv+_v1", {"top_k": "2*top_k"}, "compare2-smollm2 (f5be5b8)"),
    "stv+_4k": Variant("stv+_v1", {"top_k": "4*top_k"}, "compare2-smollm2 (f5be5b8)"),
    "stv+_4q": Variant("stv+_v1", {"queries_per_step": 4}, "compare2-smollm2 (f5be5b8)"),
    "stv+_prior": Variant("stv+_v1", {"arm_prior": True}, "compare2-smollm2 (f5be5b8)"),
    "stv+_prior_4k": Variant("stv+_v1", {"top_k": "4*top_k", "arm_prior": True}, "compare2-smollm2 (f5be5b8)"),
    "stv+_select": Variant("stv+_v1", {"arm_prior": True, "final_samples": 10}, "compare2-smollm2 (f5be5b8)"),
    "stv+_select_3x": Variant(
        "stv+_v1", {"steps": "3*steps", "arm_prior": True, "final_samples": 10}, "compare2-smollm2 (f5be5b8)"
    ),
}
SIZES = ("top_k", "clusters", "pairs", "shots", "steps", "samples", "lr", "batch_size", "seed")  # the run's


def _settings(name: str) -> tuple[str, dict[str, Any]]:
    """(the preset at the root of variant ``name``, every setting changed on the way)."""
    variant = VARIANTS[name]
    root, settings = (variant.based_on, {}) if variant.based_on in PRESETS else _settings(variant.based_on)
    return root, {**settings, **variant.settings}


def variant_config(name: str, base: STVConfig) -> STVConfig:
    """The STVConfig of variant ``name`` given the run's shared sizes in ``base``; a name may
    carry settings, ``stv+:refine_start=all`` (:func:`variant_spec`)."""
    variant, overrides = variant_spec(name)
    if variant not in VARIANTS:
        raise StvError(f"unknown STV variant {variant!r}; choose from {', '.join(VARIANTS)}")
    sizes = {key: getattr(base, key) for key in SIZES}
    root, settings = _settings(variant)
    changed = {key: linked(value, sizes) for key, value in settings.items()}  # "2*top_k": the run's K
    config = replace(STVConfig.preset(root, **{**sizes, **changed}), **overrides)
    config.check()
    return config


def variant_settings(names: Sequence[str], base: STVConfig) -> dict[str, dict]:
    """Each variant's whole STVConfig given ``base``, as a settings.json records it: a folder
    fitted under one definition of a variant is refused by another."""
    return {name: asdict(variant_config(name, base)) for name in names}


def variant_spec(spec: str) -> tuple[str, dict]:
    """ "name:field=value:..." -> (name, {field: value}), each value typed as STVConfig's default
    (``stv+:refine_start=all``: stv+'s settings and draws, one setting changed)."""
    name, *settings = spec.split(":")
    types: dict[str, Any] = {f.name: type(f.default) for f in fields(STVConfig)}
    overrides = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in types or not value:
            raise StvError(f"variant {spec!r}: {setting!r} is not field=value of an STVConfig field")
        if types[key] is bool and value not in ("True", "False"):
            raise StvError(f"variant {spec!r}: {key} takes True or False, got {value!r}")
        try:
            overrides[key] = value == "True" if types[key] is bool else types[key](value)
        except ValueError:
            raise StvError(f"variant {spec!r}: {key} takes a {types[key].__name__}, got {value!r}") from None
    return name, overrides
