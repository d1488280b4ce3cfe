"""MTV: its Bernoulli head search learns to leave alone the heads whose mean hurts, and the
final mask is drawn from what it learned."""

import numpy as np
import torch

from stv.data import load_dataset
from stv.methods.mtv import MTVConfig, fit_mtv
from stv.methods.reward import bank_rewards
from stv.tasks import task_for


def test_head_search_drops_heads_whose_vector_hurts(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:40]
    task = task_for(train)
    heads = lmm.heads
    locations = heads.all_locations()
    n = len(locations)
    means = torch.full((n, heads.head_dim), 30.0)
    # measured, not assumed: the answer's log-prob with each head written alone vs none
    bank = torch.stack([torch.full_like(means, float("nan")), means], 1)
    score = bank_rewards(lmm, train, task, locations, bank, 16, np.random.default_rng(0))
    rewards = score(0, torch.cat([torch.zeros(1, n, dtype=torch.long), torch.eye(n, dtype=torch.long)]))
    harm = rewards[0] - rewards[1:]  # (n,) how much writing head i alone lowers the reward
    order = harm.argsort()
    good, bad = order[:2], order[-2:]  # the tiny random model's effects are small (~0.1 nat) but real
    assert harm[bad].min() > 0 > harm[good].max()
    cfg = MTVConfig(steps=40, samples=16, queries_per_step=4, final_masks=6, final_items=8, batch_size=8)
    vectors = fit_mtv(lmm, train, cfg, task=task, progress=False, means=means)
    log = vectors.log
    keep = log.search.probabilities[:, 1]
    assert log.scan_result is None and len(log.locations) == n and set(log.timings) == {"means", "search"}
    assert keep[bad].max() < 0.15 and keep[good].min() > 0.5  # every head started at 0.27
    written = {tuple(x) for x in vectors.locations.tolist()}
    assert not written & {locations[i] for i in bad.tolist()}
    assert vectors.config.method == "mtv" and torch.all(vectors.vectors == 30.0)


def test_shifted_mtv_steers_the_heads_it_keeps(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:40]
    task = task_for(train)
    n = len(lmm.heads.all_locations())
    shifts = torch.randn(n, lmm.heads.head_dim)
    cfg = MTVConfig(steps=4, samples=8, queries_per_step=2, final_masks=4, final_items=8, batch_size=8)
    vectors = fit_mtv(lmm, train, cfg, task=task, progress=False, means=torch.zeros_like(shifts), shifts=shifts)
    assert len(vectors.locations) > 0 and vectors.shifts is not None
    assert bool(torch.isnan(vectors.vectors).all())  # the kept heads keep their own output ...
    index = {loc: i for i, loc in enumerate(lmm.heads.all_locations())}
    torch.testing.assert_close(vectors.shifts, shifts[[index[loc] for loc in vectors.location_list()]])  # ... + shift
