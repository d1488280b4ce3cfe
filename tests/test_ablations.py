"""The paper's ablations, built from one STV fit: mean at the top-K heads (no bank, no RL), the
bank centroid nearest the mean (no RL), and STV at random heads."""

import pytest
import torch

from stv.data import load_dataset
from stv.methods.ablations import mean_at_top_k, nearest_to_mean, random_heads
from stv.methods.fit import STVConfig, fit
from stv.tasks import task_for


def _fit(lmm):
    train = load_dataset("fv:capitalize", split="train")[:30]
    task = task_for(train)
    cfg = STVConfig.plus(top_k=4, clusters=3, pairs=6, shots=2, steps=2, samples=4, batch_size=6, prefix_pool=0)
    vectors = fit(lmm, train, cfg, task=task, progress=False)
    state = vectors.log
    return train, task, cfg, vectors, state


@pytest.mark.slow
def test_mean_and_nearest_centroid_ablations(lmm_of):
    lmm = lmm_of("llama")
    _, _, _, vectors, state = _fit(lmm)
    means = state.scan.activations_at(state.locations).mean(0)  # (K, D)
    mean = mean_at_top_k(state, vectors.config)
    assert mean.location_list() == [tuple(loc) for loc in state.locations]  # every top-K head, none left alone
    torch.testing.assert_close(mean.vectors, means)
    assert mean.config.method == "stv_mean_topk" and vectors.config.method == "stv"  # the fit's config is not edited

    nearest = nearest_to_mean(state, vectors.config)
    assert nearest.config.method == "stv_no_rl" and not torch.isnan(nearest.vectors).any()  # never the keep arm
    for k in range(len(state.locations)):
        distances = (state.bank[k] - means[k]).norm(dim=-1)  # NaN for the keep arm
        row = int(torch.nan_to_num(distances, nan=float("inf")).argmin())
        torch.testing.assert_close(nearest.vectors[k], state.bank[k, row])


@pytest.mark.slow
def test_random_heads_fit_elsewhere_with_the_same_settings(lmm_of):
    lmm = lmm_of("llama")
    train, task, _, _, state = _fit(lmm)
    cfg = STVConfig.paper(top_k=4, clusters=3, pairs=6, shots=2, steps=2, samples=4, batch_size=6)  # no keep arm
    ablation = random_heads(lmm, train, cfg, task, state, seed=0)
    assert ablation.config.method == "stv_random_heads" and len(ablation.location_list()) == cfg.top_k
    assert ablation.location_list() == random_heads(lmm, train, cfg, task, state, seed=0).location_list()  # seeded
    assert set(ablation.location_list()) <= set(lmm.heads.all_locations())
    assert set(ablation.location_list()) != set(random_heads(lmm, train, cfg, task, state, seed=1).location_list())
