"""The shared reward: prefix-cached scoring equals the plain forward, pooled prefixes equal fresh ones."""

import numpy as np
import pytest
import torch

from stv.data import digit_examples
from stv.heads import replace
from stv.methods.reward import bank_rewards, first_token_ids
from stv.tasks import DIGITS

from .conftest import text_examples


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics2", "gemma3", "llama"])
def test_prefix_cached_rewards_equal_naive_forward(lmm_of, family):
    lmm = lmm_of(family)
    train = digit_examples("parity_word")[:20] if lmm.is_multimodal else text_examples(20)
    locations = [(0, 1), (1, 3), (1, 0)]
    bank = torch.randn(3, 4, lmm.heads.head_dim)
    choices = torch.tensor([[0, 1, 2], [3, 3, 3], [1, 0, 2]])
    fast = bank_rewards(lmm, train, DIGITS, locations, bank, 2, np.random.default_rng(5))(0, choices)
    queries = [train[i] for i in np.random.default_rng(5).choice(len(train), 2, replace=False)]
    targets = first_token_ids(lmm, queries, DIGITS)
    naive = []
    for sample in choices:
        values = bank[torch.arange(3), sample]
        with replace(lmm.model, lmm.heads, locations, values):
            logits = lmm.forward([DIGITS.prompt([], q) for q in queries])
        naive.append(torch.log_softmax(logits, -1).gather(1, targets[:, None]).mean())
    torch.testing.assert_close(fast, torch.stack(naive), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen3_vl", "gemma3"])
def test_pooled_prefix_rewards_equal_fresh_prefix(lmm_of, family):
    """A cached prefix reused across steps (copied each time) gives the fresh prefix's rewards,
    also for multimodal RoPE, whose offsets must travel with the prefix, not the model."""
    lmm = lmm_of(family)
    train = digit_examples("digit")[:20]  # ten different answers: groups score differently
    locations, bank = [(0, 1), (1, 2)], torch.randn(2, 3, lmm.heads.head_dim)
    choices = torch.tensor([[0, 1], [2, 2]])
    pooled = bank_rewards(lmm, train, DIGITS, locations, bank, 2, np.random.default_rng(3), prefix_pool=2)
    rewards = [pooled(step, choices) for step in range(6)]
    lmm.prefix([DIGITS.prompt([], train[-1])])  # leaves other RoPE offsets in the model
    rewards.append(pooled(6, choices))
    rng = np.random.default_rng(3)
    groups = [[train[i] for i in rng.choice(20, 2, replace=False)] for _ in range(2)]
    fresh = []
    for queries in groups:
        prefix = lmm.prefix([DIGITS.prompt([], q) for q in queries])
        with lmm.candidates(locations, bank[torch.arange(2), choices].repeat(2, 1, 1), 2):
            logits = lmm.last_token_logits(prefix, repeats=2)
        target = first_token_ids(lmm, queries, DIGITS).repeat_interleave(2)
        fresh.append(torch.log_softmax(logits, -1).gather(1, target[:, None]).view(2, 2).mean(0))
    assert not torch.allclose(fresh[0], fresh[1], atol=1e-4)
    for r in rewards:
        assert any(torch.allclose(r, f, atol=1e-4) for f in fresh)
