"""STV variants on shared scans (`stv compare`), the presets, and the extra bank arms."""

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from stv.cli.main import main
from stv.config import STVConfig
from stv.experiments.compare import compare_table, fit_variant, run_compare
from stv.experiments.variants import VARIANTS, variant_config

from .conftest import TINY_STV_FLAGS


def test_presets_and_overrides():
    paper, plus = STVConfig.paper(top_k=5), STVConfig.plus(top_k=5, policy="every_step")
    assert (paper.sensitivity, paper.keep_arm, paper.mean_arm, paper.policy, paper.variant) == (
        "l2",
        False,
        False,
        "every_step",
        "paper",
    )
    assert (plus.sensitivity, plus.keep_arm, plus.mean_arm, plus.variant, plus.top_k) == (
        "mean_delta",
        True,
        True,
        "stv+",
        5,
    )
    assert plus.policy == "every_step"  # an override wins over the preset
    assert STVConfig.preset("stv+").policy == "prompt_last"
    with pytest.raises(ValueError, match="unknown STV variant 'best'"):
        STVConfig.preset("best")
    base = STVConfig.paper(top_k=3, clusters=2, pairs=4, shots=2, steps=1, samples=2)
    for name in VARIANTS:  # every variant keeps the run's shared sizes (K, steps scaled only where it says so)
        if name == "stv+_long":
            assert (variant_config(name, base).restarts, STVConfig.plus().restarts) == (1, 3)
        cfg = variant_config(name, base)
        assert (cfg.clusters, cfg.pairs, cfg.shots) == (
            0 if name in ("stv+_no_centroids", "stv+_shift_only") else 2,
            4,
            2,
        ), name
        assert cfg.steps == (
            3
            if name.endswith("_3x") or name == "stv+_long"
            else 0
            if name in ("stv+_prior_draws", "refine_only", "refine_only_answer", "fast", "fast_120")
            else 1
        ), name
        assert cfg.top_k == {"stv+_2k": 6, "stv+_2xk": 6, "stv+_4k": 12, "stv+_4xk": 12, "stv+_prior_4k": 12}.get(
            name, 3
        ), name
    # the old stv+ names keep their meaning after stv+ gained the arm prior and final selection
    for name in ("stv+_v1", "stv+_l2", "stv+_no_arms", "stv+_every_step", "stv+_2k", "stv+_4k", "stv+_4q"):
        assert (variant_config(name, base).arm_prior, variant_config(name, base).final_samples) == (False, 0), name
    assert (variant_config("stv+", base).arm_prior, variant_config("stv+", base).final_samples) == (True, 10)
    # ... and those of compare5-9 theirs after stv+ gained restarts, fresh queries, the
    # continuation search and the schedule choice
    for name in ("stv+_v2", "stv+_2xk", "stv+_4xk", "stv+_ranked"):
        cfg = variant_config(name, base)
        assert (cfg.prefix_pool, cfg.restarts, cfg.continuation_search, cfg.schedule_items) == (16, 1, 0, 0), name
    plus = variant_config("stv+", base)
    assert (plus.prefix_pool, plus.restarts, plus.continuation_search, plus.schedule_items) == (0, 3, 1, 24)
    assert (plus.objective, plus.final_objective, plus.final_keep) == ("hits", "hits", True)
    assert plus.continuation_objective == "log_prob"  # stv+ v4 had hits there: stv+_hits_rl
    # v9 (the current stv+) is v8 with a third, steered start, a margin for it, and 3x the steps
    v8 = variant_config("stv+_v8", base)
    assert plus == replace(v8, refine=180, refine_start="all", steer_margin=2) == variant_config("stv+_all_long", base)
    assert variant_config("stv+_hits_rl", base) == replace(v8, continuation_objective="hits", refine=0)
    # ... and those of compare12-23 theirs after stv+ v7 gained gradient refinement
    assert (v8.refine, variant_config("stv+_v6", base)) == (60, replace(v8, refine=0))
    for name in ("stv+_v5", "stv+_no_centroids", "stv+_shift", "stv+_shift_only", "stv+_prior_draws", "stv+_long"):
        assert variant_config(name, base).refine == 0, name
    # ... and compare24-26's after v8 moved refinement to the whole answer, every head and two starts
    v7 = variant_config("stv+_v7", base)
    assert (v7.refine_heads, v7.refine_objective, v7.refine_start) == ("written", "first_token", "search")
    assert v7 == replace(v8, refine_heads="written", refine_objective="first_token", refine_start="search")
    assert variant_config("stv+_refine", base) == v7
    assert variant_config("stv+_refine_every", base) == replace(v7, refine_heads="every")
    assert variant_config("stv+_refine_answer", base) == replace(v7, refine_objective="answer")
    every_answer = replace(v7, refine_heads="every", refine_objective="answer")
    assert variant_config("stv+_every_answer", base) == every_answer
    assert variant_config("stv+_both_answer", base) == replace(every_answer, refine_start="both") == v8
    only = variant_config("refine_only", base)
    assert (only.refine_heads, only.refine_objective, only.refine_start) == ("every", "first_token", "search")
    assert variant_config("refine_only_answer", base) == replace(
        variant_config("refine_only", base), refine_objective="answer"
    )
    # ... and those of compare10-11 theirs after the objectives became options
    for name in ("stv+_v1", "stv+_v2", "stv+_r3_next_auto", "stv+_v3"):
        cfg = variant_config(name, base)
        assert (cfg.objective, cfg.final_objective, cfg.final_keep) == ("log_prob", "log_prob", False), name


@pytest.mark.slow
def test_compare_fits_every_variant_on_one_scan(lmm_of, tmp_path, monkeypatch):
    from stv.methods import scan as scan_module

    scans = []
    real = scan_module.sensitivity_scan
    monkeypatch.setattr("stv.experiments.compare.sensitivity_scan", lambda *a, **k: scans.append(1) or real(*a, **k))
    base = STVConfig.paper(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    result = run_compare(
        lmm_of("llama"),
        ["capitalize"],
        [0],
        ["paper", "stv+", "stv+_shift_only"],
        base,
        test_per_task=3,
        icl_shots=2,
        max_new_tokens=2,
        progress=False,
    )
    assert len(scans) == 1  # one scan per (task, seed), shared by MTV and every variant
    # stv+ chooses its schedule from training answers, searches for hits and rechecks its final
    # shortlist, so MTV does all three too; a variant with the shift arm gets MTV with it
    methods = ["zero_shot", "icl_2", "mtv", "mtv_prompt_last", "mtv_auto", "mtv_hits_recheck", "mtv_shift_hits_recheck"]
    assert [r["method"] for r in result["rows"]] == [*methods, "lora", "paper", "stv+", "stv+_shift_only"]
    by_method = {r["method"]: r for r in result["rows"]}
    # cost columns: LoRA and stv+ (refinement) take a backward pass, MTV and the paper's STV do not
    assert [by_method[m]["backward"] for m in ("mtv", "lora", "paper", "stv+")] == [False, True, False, True]
    assert by_method["lora"]["used"] == by_method["lora"]["stored"] > by_method["mtv"]["used"] > 0
    assert all(by_method[m]["peak_mb"] > 0 and by_method[m]["fit_s"] >= 0 for m in ("mtv", "lora", "paper"))
    assert "fit_s" not in by_method["icl_2"] and "peak_mb" not in by_method["icl_2"]  # ICL fits nothing
    assert result["rows"][-1]["arms"]["mean"] == 0 == result["rows"][-1]["arms"]["centroid"]
    refined = result["rows"][-2]["refine"]  # stv+'s refinement: the start kept and each start's held-out score
    judged = refined["judged"]
    assert set(judged) <= {"search", "zero", "steer"}
    assert judged[refined["start"]] >= max(v for k, v in judged.items() if k != "steer")  # the best kept
    table = compare_table(result, "exact_match")
    assert (
        table.splitlines()[0]
        == ("| method | capitalize | average | fit s | peak MB | backward | numbers used | eval s |")
        and "| stv+ |" in table
    )
    with pytest.raises(ValueError, match="unknown STV variant"):
        run_compare(lmm_of("llama"), ["capitalize"], [0], ["nope"], base, progress=False)


@pytest.mark.slow
def test_fit_variant_flag_records_the_variant(tmp_path, family_dir, capsys):
    out = tmp_path / "tv"
    assert (
        main(
            [
                "fit",
                "--model",
                family_dir("llama"),
                "--dataset",
                "fv:capitalize",
                "--out",
                str(out),
                "--variant",
                "stv+",
                *TINY_STV_FLAGS,
                "--prefix-pool",
                "2",
            ]
        )
        == 0
    )
    config = json.loads((out / "task_vectors.json").read_text())
    assert config["hyperparameters"]["variant"] == "stv+" and config["policy"] == "prompt_last"
    assert config["hyperparameters"]["sensitivity"] == "mean_delta" and config["hyperparameters"]["prefix_pool"] == 2


@pytest.mark.slow
def test_continuation_rows_for_mtv_and_the_variant(lmm_of):
    base = STVConfig.paper(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    result = run_compare(
        lmm_of("llama"),
        ["capitalize"],
        [0],
        ["stv+_cont"],
        base,
        test_per_task=3,
        icl_shots=2,
        max_new_tokens=3,
        progress=False,
    )
    methods = ["zero_shot", "icl_2", "mtv", "mtv_prompt_last", "mtv_cont", "lora", "stv+_cont"]
    assert [r["method"] for r in result["rows"]] == methods
    assert variant_config("stv+_cont", base).continuation == 4
    with pytest.raises(ValueError, match="needs policy prompt_last"):
        STVConfig.paper(continuation=2, policy="every_step").check()


@pytest.mark.slow
def test_compare_keeps_each_unit_and_resumes_only_the_missing_ones(lmm_of, family_dir, tmp_path, monkeypatch, capsys):
    from stv.errors import SettingsMismatchError
    from stv.methods import scan as scan_module

    scans = []
    real = scan_module.sensitivity_scan
    monkeypatch.setattr("stv.experiments.compare.sensitivity_scan", lambda *a, **k: scans.append(1) or real(*a, **k))
    base = STVConfig.paper(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    sizes = {"test_per_task": 3, "icl_shots": 2, "max_new_tokens": 2, "progress": False}
    lmm, out = lmm_of("llama"), tmp_path / "cmp"
    first = run_compare(lmm, ["capitalize"], [0, 1], ["paper"], base, **sizes, out=out)
    assert len(scans) == 2 and sorted(p.name for p in (out / "units").iterdir()) == [
        "capitalize.seed0.json",
        "capitalize.seed1.json",
    ]
    assert json.loads((out / "compare.json").read_text())["partial"] is False

    (out / "units" / "capitalize.seed1.json").unlink()  # as if killed during seed 1
    again = run_compare(lmm, ["capitalize"], [0, 1], ["paper"], base, **sizes, out=out)
    assert len(scans) == 3  # seed 0 was read back, seed 1 computed again ...
    scores = [[(r["method"], r["first_token"], r["exact_match"]) for r in res["rows"]] for res in (first, again)]
    assert scores[0] == scores[1]  # ... to the same numbers

    real_fit = fit_variant
    monkeypatch.setattr(
        "stv.experiments.compare.fit_variant",
        lambda *a: real_fit(*a) if a[-1] == 0 else (_ for _ in ()).throw(KeyboardInterrupt),
    )
    with pytest.raises(KeyboardInterrupt):  # killed in seed 1: seed 0's rows are there, labelled partial
        run_compare(lmm, ["capitalize"], [0, 1], ["paper"], base, **sizes, out=tmp_path / "killed")
    assert (tmp_path / "killed" / "compare.md").read_text().startswith("**partial: 1 of 2 (task, seed) units**")
    kept = json.loads((tmp_path / "killed" / "compare.json").read_text())
    assert kept["partial"] is True and {r["seed"] for r in kept["rows"]} == {0}
    with pytest.raises(SettingsMismatchError, match="steps: 2 -> 3"):
        run_compare(lmm, ["capitalize"], [0], ["paper"], replace(base, steps=3), **sizes, out=out)
    # the CLI refuses before it loads the model (this one does not exist)
    flags = ["--tasks", "capitalize", "--variants", "paper", "--out", str(out), "--steps", "3"]
    assert main(["compare", "--model", str(tmp_path / "no-model"), *flags]) == 2
    assert "compare results computed under other settings" in capsys.readouterr().err
    run_compare(lmm, ["capitalize"], [0], ["paper"], replace(base, steps=3), **sizes, out=out, recompute=True)
    assert len(scans) == 6 and [p.name for p in (out / "units").iterdir()] == ["capitalize.seed0.json"]


@pytest.mark.slow
def test_mtv_alone_at_its_own_budget(lmm_of, monkeypatch):
    from stv.methods import mtv as mtv_module

    steps = []
    real = mtv_module.fit_mtv
    monkeypatch.setattr(
        "stv.experiments.compare.fit_mtv",
        lambda lmm, train, cfg, **k: steps.append(cfg.steps) or real(lmm, train, cfg, **k),
    )
    base = STVConfig.paper(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    sizes = {"test_per_task": 3, "icl_shots": 2, "max_new_tokens": 2, "progress": False}
    result = run_compare(lmm_of("llama"), ["capitalize"], [0], [], base, **sizes, mtv_steps=6)
    assert [r["method"] for r in result["rows"]] == ["zero_shot", "icl_2", "mtv", "mtv_prompt_last", "lora"]
    assert steps == [6] and result["settings"]["mtv_steps"] == 6


def test_settings_a_name_carries_keep_its_draws_and_another_name_draws_otherwise(lmm_of):
    """``stv+:refine=2`` searches exactly as ``stv+`` (refinement comes after the search), and a
    variant with the same search under another name draws otherwise."""
    from stv.data import load_dataset
    from stv.methods.fit import scan_pairs
    from stv.methods.scan import sensitivity_scan
    from stv.tasks import task_for

    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:40]
    task = task_for(train)
    base = STVConfig.paper(top_k=3, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    scan = sensitivity_scan(lmm, scan_pairs(train, task, 4, 2, np.random.default_rng(0)), 4, progress=False)

    def searched(name: str) -> torch.Tensor:
        vectors, _ = fit_variant(lmm, train, task, scan, f"{name}:refine=2", base, 0)
        assert vectors.probabilities is not None
        return vectors.probabilities

    plus = searched("stv+")
    assert torch.equal(plus, searched("stv+:refine_start=zero"))
    assert asdict(variant_config("stv+_all_long", base)) == asdict(variant_config("stv+", base))  # v9 = stv+
    assert not torch.equal(plus, searched("stv+_all_long"))  # the same settings, its own draws


def test_a_variant_spec_names_settings_typed_as_the_config_and_refuses_unknown_ones():
    from stv.errors import StvError
    from stv.experiments.variants import variant_spec

    assert variant_spec("stv+") == ("stv+", {})
    assert variant_spec("stv+:refine_start=all:judge_apart=True:refine=5:refine_lr=0.1") == (
        "stv+",
        {"refine_start": "all", "judge_apart": True, "refine": 5, "refine_lr": 0.1},
    )
    for bad in ("stv+:nope=1", "stv+:refine", "stv+:refine=x", "stv+:judge_apart=yes"):
        with pytest.raises(StvError, match="variant"):
            variant_spec(bad)
    assert variant_config("stv+:refine_start=all", STVConfig()) == replace(
        variant_config("stv+", STVConfig()), refine_start="all"
    )
    with pytest.raises(StvError, match="refine_start"):  # a value the config refuses, before any model loads
        variant_config("stv+:refine_start=middle", STVConfig())
