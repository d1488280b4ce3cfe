"""STV end to end: the bank's extra arms, the arm prior, the final selection, fit on every
family, resuming a finished scan, and the CLI."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stv.config import STVConfig
from stv.data import digit_examples, load_dataset
from stv.errors import StvError
from stv.methods.fit import fit, fit_at
from stv.tasks import DIGITS, task_for
from stv.testing import FAMILIES
from stv.vectors import TaskVectors

from .conftest import TINY_STV_FLAGS, text_examples


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fit_then_generate_with_the_artifact(tmp_path, lmm_of, family):
    """Plumbing on every family (random weights): fit, save, load, generate with insertion."""
    lmm = lmm_of(family)
    train = digit_examples("parity_word")[:16] if lmm.is_multimodal else text_examples(16)
    config = STVConfig.paper(top_k=3, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    vectors = fit(lmm, train, config, progress=False)
    state = vectors.log
    assert state.bank.shape == (3, 2, lmm.heads.head_dim) and len(state.search.reward_curve) == 2
    vectors.save_pretrained(tmp_path / "tv")
    loaded = TaskVectors.from_pretrained(tmp_path / "tv")
    prompt = [DIGITS.prompt([], train[0])]
    with vectors.apply(lmm):
        fitted = lmm.generate(prompt, max_new_tokens=3)
    with loaded.apply(lmm):
        assert lmm.generate(prompt, max_new_tokens=3) == fitted  # the saved artifact acts as the fitted one


def test_fit_resumes_a_finished_scan(tmp_path, lmm_of):
    lmm = lmm_of("llava")
    train = digit_examples("size_word")[:16]
    config = STVConfig.paper(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    first = fit(lmm, train, config, progress=False, workdir=tmp_path)
    calls = []
    handle = lmm.model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        again = fit(lmm, train, config, progress=False, workdir=tmp_path)
    finally:
        handle.remove()
    # only REINFORCE ran (one prefix pass for every step's queries, drawn ahead, and a
    # last-token pass per step), no scan passes
    assert len(calls) == 1 + config.steps
    torch.testing.assert_close(first.vectors, again.vectors)
    changed = STVConfig(**{**config.__dict__, "seed": 1})
    calls.clear()
    handle = lmm.model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        fit(lmm, train, changed, progress=False, workdir=tmp_path)
    finally:
        handle.remove()
    assert len(calls) > 2 * config.steps  # a different seed means a different scan


def test_cli_fit_eval_and_clear_errors(tmp_path, family_dir, capsys):
    from stv.cli.main import main

    model = family_dir("idefics3")
    args = ["--model", model, "--dataset", "digits:parity_AB", "--out", str(tmp_path / "run"), *TINY_STV_FLAGS]
    assert main(["fit", *args]) == 0
    assert (tmp_path / "run" / "task_vectors.safetensors").is_file() and (tmp_path / "run" / "reinforce.png").is_file()

    def first_token_eval(on: str) -> int:
        vectors = ["--vectors", str(tmp_path / "run"), "--limit", "4", "--first-token"]
        return main(["eval", "--model", on, "--dataset", "digits:parity_AB", *vectors])

    assert first_token_eval(model) == 0
    assert '"accuracy"' in capsys.readouterr().out
    assert first_token_eval(family_dir("llava")) == 2
    assert "fitted on" in capsys.readouterr().err
    assert main(["eval", "--model", model, "--dataset", "digits:nope"]) == 2
    assert "unknown digits task" in capsys.readouterr().err


@pytest.mark.slow
def test_mean_and_keep_arms_extend_the_bank(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:30]
    task = task_for(train)
    cfg = STVConfig.paper(top_k=3, clusters=2, pairs=6, shots=2, steps=2, samples=4, batch_size=6)
    state = fit(lmm, train, cfg, task=task, progress=False).log
    plus = STVConfig.plus(top_k=3, clusters=2, pairs=6, shots=2, steps=2, samples=4, batch_size=6, prefix_pool=2)
    _, arms = fit_at(lmm, train, plus, task, state.scan, state.locations, np.random.default_rng(0), progress=False)
    assert arms.bank.shape == (3, 4, lmm.heads.head_dim)  # 2 centroids + mean + keep (NaN)
    means = state.scan.activations_at(state.locations).mean(0)
    assert torch.allclose(arms.bank[:, 2], means) and bool(torch.isnan(arms.bank[:, 3]).all())
    plus = replace(plus, continuation_search=0, schedule_items=0, refine=0)  # the search's vectors only
    vectors, _ = fit_at(lmm, train, plus, task, state.scan, state.locations, np.random.default_rng(0), progress=False)
    counts = vectors.config.extra["arms"]  # what each head got, recorded in the artifact
    assert sum(counts.values()) == 3 and counts["centroid"] + counts["mean"] == len(vectors.location_list())
    order = [tuple(loc) for loc in state.locations]
    is_mean = [torch.allclose(v, means[order.index(loc)]) for loc, v in zip(vectors.location_list(), vectors.vectors)]
    assert sum(is_mean) == counts["mean"]


def test_no_centroids_leaves_mtvs_arms_only(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:30]
    task = task_for(train)
    cfg = STVConfig.plus(top_k=3, clusters=0, pairs=6, shots=2, steps=2, samples=4, batch_size=6, restarts=1)
    cfg = replace(cfg, continuation_search=0, schedule_items=0, refine=0)
    vectors = fit(lmm, train, cfg, task=task, progress=False)
    state = vectors.log
    assert state.bank.shape == (3, 2, lmm.heads.head_dim)  # the mean and keep, no centroid
    means = state.scan.activations_at(state.locations).mean(0)
    order = [tuple(loc) for loc in state.locations]
    for loc, v in zip(vectors.location_list(), vectors.vectors):  # whatever is written is MTV's vector for that head
        torch.testing.assert_close(v, means[order.index(loc)])
    assert vectors.config.extra["arms"]["centroid"] == 0
    with pytest.raises(StvError, match="clusters=0"):
        STVConfig.paper(clusters=0).check()  # no mean arm: nothing to choose from


@pytest.mark.slow
def test_shift_arm_adds_the_scans_mean_delta(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:30]
    task = task_for(train)
    sizes = dict(top_k=3, pairs=6, shots=2, steps=2, samples=4, batch_size=6, restarts=1)
    cfg = STVConfig.plus(clusters=2, shift_arm=True, **sizes)
    state = fit(lmm, train, cfg, task=task, progress=False).log
    assert state.bank.shape == (3, 5, lmm.heads.head_dim)  # 2 centroids, mean, shift (own output), keep
    assert bool(torch.isnan(state.bank[:, 3:]).all())
    # only the shift arm (no keep, no final "nothing"): every head keeps its own output plus the mean delta
    only = replace(cfg, clusters=0, mean_arm=False, keep_arm=False, final_keep=False, continuation_search=0)
    only = replace(only, schedule_items=0, refine=0)
    vectors, _ = fit_at(lmm, train, only, task, state.scan, state.locations, np.random.default_rng(0), progress=False)
    assert vectors.config.extra["arms"] == {"centroid": 0, "mean": 0, "shift": 3, "keep": 0}
    assert vectors.location_list() == [tuple(loc) for loc in state.locations] and vectors.shifts is not None
    assert bool(torch.isnan(vectors.vectors).all())
    torch.testing.assert_close(vectors.shifts, state.scan.shifts_at(state.locations))
    with pytest.raises(StvError, match="clusters=0"):
        replace(only, shift_arm=False).check()


def test_arm_prior_starts_where_mtv_starts():
    from stv.methods.fit import _prior_logits

    probs = _prior_logits(STVConfig.plus(clusters=4, arm_prior=True), 6).exp()
    assert torch.allclose(probs, torch.tensor([1 / 16] * 4 + [0.25, 0.5]))
    assert _prior_logits(STVConfig.plus(arm_prior=False), 6) is None
    assert torch.allclose(
        _prior_logits(STVConfig.paper(arm_prior=True, keep_arm=True), 5).exp().sum(), torch.tensor(1.0)
    )
    ranked = _prior_logits(STVConfig.plus(clusters=4, arm_prior=True, ranked_prior=True), 6, 3).exp()  # (3, 6)
    assert torch.allclose(ranked[:, -1], torch.tensor([0.25, 0.5, 0.75]))  # most sensitive head written most
    assert torch.allclose(ranked.sum(1), torch.ones(3)) and torch.allclose(ranked[1], probs)
    no_centroids = _prior_logits(STVConfig.plus(clusters=0), 2).exp()  # MTV's start: write the mean or not, 1/2 each
    assert torch.allclose(no_centroids, torch.tensor([0.5, 0.5]))
    shift = _prior_logits(STVConfig.plus(clusters=4, shift_arm=True), 7).exp()  # mean and shift share MTV's 1/4
    assert torch.allclose(shift, torch.tensor([1 / 16] * 4 + [1 / 8, 1 / 8, 0.5]))


def _loud_or_keep(lmm_of):
    """A tiny model, capitalize, 6 heads and a bank of two arms: 50.0 everywhere (0), keep (1)."""
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:30]
    loud = torch.full((6, 1, lmm.heads.head_dim), 50.0)
    bank = torch.cat([loud, torch.full_like(loud, float("nan"))], 1)
    return lmm, train, task_for(train), lmm.heads.all_locations()[:6], bank


def test_final_selection_drops_an_argmax_that_scores_worse(lmm_of):
    """A policy whose argmax writes garbage into every head loses to a draw that leaves some
    heads alone: select_final keeps the candidate with the best first-token log-prob."""
    from stv.methods.fit import select_final
    from stv.methods.reinforce import ReinforceResult
    from stv.methods.reward import bank_rewards

    lmm, train, task, locations, bank = _loud_or_keep(lmm_of)
    policy = ReinforceResult(torch.tensor([[0.1, 0.0]]).expand(6, 2).clone())  # argmax: garbage everywhere
    cfg = STVConfig.paper(final_samples=8, final_items=6, seed=0)
    _, chosen = select_final(lmm, train, task, locations, bank, [policy], cfg, np.random.default_rng(0))
    assert chosen.shape == (6,) and int(chosen.sum()) > 0  # some heads left alone
    score = bank_rewards(lmm, train, task, locations, bank, 6, np.random.default_rng(0))  # the same queries
    both = score(0, torch.stack([policy.choice, chosen]))
    assert both[1] > both[0]


def test_final_keep_lets_writing_nothing_win():
    """With final_keep, the choice that leaves every head alone competes in the final selection:
    on the lab's big_AB, which the model gets mostly right zero-shot, it beats a policy that
    writes garbage everywhere; without final_keep the garbage is all there is."""
    from stv.experiments.lab import load_lab
    from stv.methods.fit import select_final
    from stv.methods.reinforce import ReinforceResult

    lab = load_lab()
    train = digit_examples("big_AB", "train")[:40]
    locations = lab.heads.all_locations()[:6]
    loud = torch.full((6, 1, lab.heads.head_dim), 50.0)
    bank = torch.cat([loud, torch.full_like(loud, float("nan"))], 1)  # (6, 2): garbage, keep
    policy = ReinforceResult(torch.tensor([[1.0, 0.0]]).expand(6, 2).clone())  # argmax: garbage everywhere
    for objective in ("log_prob", "hits"):
        for final_keep, expected in ((False, 0), (True, 1)):
            cfg = STVConfig.paper(keep_arm=True, final_keep=final_keep, final_objective=objective, final_items=16)
            search, chosen = select_final(lab, train, DIGITS, locations, bank, [policy], cfg, np.random.default_rng(0))
            assert search is policy and torch.equal(chosen, torch.full((6,), expected))


def test_final_selection_picks_across_restarts(lmm_of):
    """Two REINFORCE runs settled on different arms: with no draws (final_samples 0) the final
    selection returns the run whose argmax scores best on the held-out training queries, in
    either order."""
    from stv.methods.fit import select_final
    from stv.methods.reinforce import ReinforceResult
    from stv.methods.reward import bank_rewards

    lmm, train, task, locations, bank = _loud_or_keep(lmm_of)
    runs = [ReinforceResult(torch.tensor([[1.0, 0.0]]).expand(6, 2).clone()), ReinforceResult(torch.zeros(6, 2))]
    runs[1].logits[:, 1] = 1.0
    score = bank_rewards(lmm, train, task, locations, bank, 6, np.random.default_rng(0))  # the selection's queries
    scores = score(0, torch.stack([r.choice for r in runs]))
    assert scores[0] != scores[1]
    best = runs[int(scores.argmax())]
    cfg = STVConfig.paper(final_samples=0, final_items=6, restarts=2, seed=0)
    for order in (runs, runs[::-1]):
        search, chosen = select_final(lmm, train, task, locations, bank, order, cfg, np.random.default_rng(0))
        assert search is best and torch.equal(chosen, best.choice)


def test_restarts_run_their_own_searches(lmm_of):
    """Each restart is a REINFORCE run of its own (one prefix pass for its steps' queries, a
    last-token pass per step), then one final selection over them (one more of each)."""
    lmm = lmm_of("llama")
    train = text_examples(16)
    config = STVConfig.paper(top_k=3, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    passes = {}
    for restarts in (1, 3):
        calls = []
        handle = lmm.model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
        try:
            log = fit(lmm, train, STVConfig(**{**config.__dict__, "restarts": restarts}), progress=False).log
        finally:
            handle.remove()
        passes[restarts] = len(calls)
        assert ("select" in log.timings) == (restarts > 1) and len(log.search.reward_curve) == config.steps
    assert passes[3] - passes[1] == 2 * (1 + config.steps) + 2
    with pytest.raises(StvError, match="restarts"):
        STVConfig.paper(restarts=0).check()


@pytest.mark.slow
def test_reinforce_maximises_the_chosen_objective():
    """The objective reaches REINFORCE's reward: on the lab's big_AB the mean reward per step is
    a share of hits (in [0, 1]) under "hits" and a log-prob (< 0) under "log_prob", and the two
    runs end on different policies."""
    from stv.experiments.lab import load_lab

    lab = load_lab()
    train = digit_examples("big_AB", "train")[:60]
    sizes = {"clusters": 4, "pairs": 8, "shots": 4, "steps": 6, "samples": 8, "batch_size": 8, "restarts": 1}
    logs = {}
    for objective in ("hits", "log_prob"):
        config = STVConfig.plus(**sizes, objective=objective, continuation_search=0, schedule_items=0)
        logs[objective] = fit(lab, train, config, progress=False).log
    hits, logp = logs["hits"].search.reward_curve, logs["log_prob"].search.reward_curve
    assert all(-1e-3 < r <= 1 + 1e-3 for r in hits) and max(hits) > 0.1
    assert all(r < 0 for r in logp)
    assert not torch.equal(logs["hits"].search.logits, logs["log_prob"].search.logits)


def test_recheck_judges_the_shortlist_on_every_query_drawn(lmm_of):
    """With ``recheck`` the best quarter of the first draw's scores (at least two) is scored on
    more draws of the same size and the best mean over all of them wins; the test replays the
    same draws. Over a few seeds the recheck overturns the first draw's winner at least once,
    so a recheck that were ignored would fail here."""
    from stv.methods.reward import bank_rewards
    from stv.methods.select import select_best

    lmm, train, task, locations, bank = _loud_or_keep(lmm_of)
    bank = bank.clone()
    bank[:, 0] = torch.randn(6, lmm.heads.head_dim, generator=torch.Generator().manual_seed(0)) * 4
    every = torch.randint(0, 2, (8, 6), generator=torch.Generator().manual_seed(1))  # 8 candidates
    overturned = 0
    for seed in range(6):
        _, chosen = select_best(
            lmm, train, task, locations, bank, [], 0, 3, 0, np.random.default_rng(seed), fixed=list(every), recheck=7
        )
        replay = np.random.default_rng(seed)
        first = bank_rewards(lmm, train, task, locations, bank, 3, replay)(0, every)
        shortlist = torch.argsort(first, descending=True, stable=True)[:2]
        pooled = first[shortlist] * 3
        for n in (3, 3, 1):  # 7 more queries in draws of at most 3
            pooled += bank_rewards(lmm, train, task, locations, bank, n, replay)(0, every[shortlist]) * n
        assert torch.equal(chosen, every[shortlist[int(pooled.argmax())]])
        overturned += not torch.equal(chosen, every[int(first.argmax())])
    assert overturned
