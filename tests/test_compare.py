"""STV variants on shared scans (`stv compare`), the presets, and the extra bank arms."""

import json

import numpy as np
import pytest
import torch

from stv.cli import main
from stv.compare import VARIANTS, compare_table, run_compare, variant_config
from stv.config import STVConfig
from stv.data import load_dataset
from stv.methods.fit import fit, fit_at
from stv.tasks import task_for

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
    base = STVConfig(top_k=3, clusters=2, pairs=4, shots=2, steps=1, samples=2)
    for name in VARIANTS:  # every variant keeps the run's shared sizes (K, steps scaled only where it says so)
        cfg = variant_config(name, base)
        assert (cfg.clusters, cfg.pairs, cfg.shots) == (2, 4, 2), name
        assert cfg.steps == (3 if name.endswith("_3x") else 1), name
        assert cfg.top_k == {"stv+_2k": 6, "stv+_2xk": 6, "stv+_4k": 12, "stv+_4xk": 12, "stv+_prior_4k": 12}.get(
            name, 3
        ), name
    # the old stv+ names keep their meaning after stv+ gained the arm prior and final selection
    for name in ("stv+_v1", "stv+_l2", "stv+_no_arms", "stv+_every_step", "stv+_2k", "stv+_4k", "stv+_4q"):
        assert (variant_config(name, base).arm_prior, variant_config(name, base).final_samples) == (False, 0), name
    assert (variant_config("stv+", base).arm_prior, variant_config("stv+", base).final_samples) == (True, 10)


def test_mean_and_keep_arms_extend_the_bank(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:30]
    task = task_for(train)
    cfg = STVConfig(top_k=3, clusters=2, pairs=6, shots=2, steps=2, samples=4, batch_size=6)
    _, state = fit(lmm, train, cfg, task=task, progress=False)
    plus = STVConfig.plus(top_k=3, clusters=2, pairs=6, shots=2, steps=2, samples=4, batch_size=6, prefix_pool=2)
    _, arms = fit_at(lmm, train, plus, task, state.scan, state.locations, np.random.default_rng(0), progress=False)
    assert arms.bank.shape == (3, 4, lmm.heads.head_dim)  # 2 centroids + mean + keep (NaN)
    means = state.scan.activations_at(state.locations).mean(0)
    assert torch.allclose(arms.bank[:, 2], means) and bool(torch.isnan(arms.bank[:, 3]).all())


def test_compare_fits_every_variant_on_one_scan(lmm_of, tmp_path, monkeypatch):
    from stv.methods import scan as scan_module

    scans = []
    real = scan_module.sensitivity_scan
    monkeypatch.setattr("stv.compare.sensitivity_scan", lambda *a, **k: scans.append(1) or real(*a, **k))
    base = STVConfig(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    result = run_compare(
        lmm_of("llama"),
        ["capitalize"],
        [0],
        ["paper", "stv+"],
        base,
        test_per_task=3,
        icl_shots=2,
        max_new_tokens=2,
        progress=False,
    )
    assert len(scans) == 1  # one scan per (task, seed), shared by MTV and both variants
    assert [r["method"] for r in result["rows"]] == ["icl_2", "mtv", "mtv_prompt_last", "paper", "stv+"]
    table = compare_table(result, "exact_match")
    assert table.splitlines()[0] == "| method | capitalize | average | fit s |" and "| stv+ |" in table
    with pytest.raises(ValueError, match="unknown STV variant"):
        run_compare(lmm_of("llama"), ["capitalize"], [0], ["nope"], base, progress=False)


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


def test_arm_prior_starts_where_mtv_starts():
    from stv.methods.fit import _prior_logits

    probs = _prior_logits(STVConfig.plus(clusters=4, arm_prior=True), 6).exp()
    assert torch.allclose(probs, torch.tensor([1 / 16] * 4 + [0.25, 0.5]))
    assert _prior_logits(STVConfig.plus(arm_prior=False), 6) is None
    assert torch.allclose(_prior_logits(STVConfig(arm_prior=True, keep_arm=True), 5).exp().sum(), torch.tensor(1.0))


def test_final_selection_drops_an_argmax_that_scores_worse(lmm_of):
    """A policy whose argmax writes garbage into every head loses to a draw that leaves some
    heads alone: select_final keeps the candidate with the best first-token log-prob."""
    from stv.methods.fit import select_final
    from stv.methods.policy import PolicyResult
    from stv.methods.reward import bank_rewards

    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:30]
    task = task_for(train)
    locations = lmm.heads.all_locations()[:6]
    garbage = torch.full((6, 1, lmm.heads.head_dim), 50.0)
    bank = torch.cat([garbage, torch.full_like(garbage, float("nan"))], 1)  # arm 0 garbage, arm 1 keep
    policy = PolicyResult(torch.tensor([[0.1, 0.0]]).expand(6, 2).clone())  # argmax: garbage everywhere
    cfg = STVConfig(final_samples=8, final_items=6, seed=0)
    chosen = select_final(lmm, train, task, locations, bank, policy, cfg, np.random.default_rng(0))
    assert chosen.shape == (6,) and int(chosen.sum()) > 0  # some heads left alone
    score = bank_rewards(lmm, train, task, locations, bank, 6, np.random.default_rng(0))  # the same queries
    both = score(0, torch.stack([policy.choice, chosen]))
    assert both[1] > both[0]


def test_continuation_rows_for_mtv_and_the_variant(lmm_of):
    base = STVConfig(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
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
    assert [r["method"] for r in result["rows"]] == ["icl_2", "mtv", "mtv_prompt_last", "mtv_cont", "stv+_cont"]
    assert variant_config("stv+_cont", base).continuation == 4
    with pytest.raises(ValueError, match="only with policy prompt_last"):
        STVConfig(continuation=2, policy="every_step").check()


def test_default_k_follows_the_keep_arm():
    from stv.config import default_top_k

    assert [default_top_k(h, keep_arm=True) for h in (16, 72, 270)] == [16, 64, 64]
    assert [default_top_k(h, keep_arm=False) for h in (16, 72, 270, 1024)] == [8, 18, 64, 64]
