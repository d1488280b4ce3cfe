"""The shared reward: prefix-cached scoring equals the plain forward, pooled prefixes equal fresh ones."""

import numpy as np
import pytest
import torch

from stv.data import digit_examples
from stv.hooks.heads import write_heads
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
        with write_heads(lmm.model, lmm.heads, locations, values):
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


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "gemma3", "llama"])
@pytest.mark.parametrize("after", [False, True])
def test_prefixes_drawn_ahead_equal_step_by_step(lmm_of, family, after):
    """A search that says how many steps it runs gets its fresh queries' prefixes computed
    several steps at a time: the same queries in the same order (the generator ends where it
    would), the same rewards, with the continuation search's fitted vectors too."""
    from stv.vectors import TaskVectors

    lmm = lmm_of(family)
    train = digit_examples("digit")[:30] if lmm.is_multimodal else text_examples(30)
    locations, bank = [(0, 1), (1, 2)], torch.randn(2, 3, lmm.heads.head_dim)
    fitted = TaskVectors(torch.tensor([(1, 0)]), torch.randn(1, lmm.heads.head_dim)) if after else None
    steps, choices = 20, torch.tensor([[0, 1], [2, 2], [1, 0]])
    rngs = {ahead: np.random.default_rng(7) for ahead in (0, steps)}
    runs = {
        ahead: bank_rewards(lmm, train, DIGITS, locations, bank, 2, rngs[ahead], after=fitted, steps=ahead)
        for ahead in (0, steps)
    }
    one_by_one = torch.stack([runs[0](step, choices) for step in range(steps)])  # (steps, S)
    drawn_ahead = torch.stack([runs[steps](step, choices) for step in range(steps)])
    torch.testing.assert_close(drawn_ahead, one_by_one, atol=1e-4, rtol=0)
    assert one_by_one.std(0).max() > 1e-3  # the steps drew different queries
    assert rngs[0].bit_generator.state == rngs[steps].bit_generator.state


def test_hits_and_margin_objectives():
    """objective "hits" scores a candidate by eval's first-token accuracy on the queries it
    draws, ties broken by (a scaled-down) log-prob; "margin" by the answer token's log-prob
    minus the best other token's, positive exactly on the hits. Writing nothing on the lab's
    big_AB, which the model gets mostly right zero-shot, scores both as computed prompt by prompt."""
    from stv.evaluate import first_token_accuracy
    from stv.experiments.lab import load_lab
    from stv.methods.reward import TIE_SCALE

    lab = load_lab()
    train = digit_examples("big_AB", "train")[:40]
    locations = [(0, 0), (1, 1)]
    nothing = torch.full((2, 1, lab.heads.head_dim), float("nan"))  # the keep arm only
    choices = torch.zeros(1, 2, dtype=torch.long)
    args = (lab, train, DIGITS, locations, nothing, 40)
    hits = bank_rewards(*args, np.random.default_rng(0), objective="hits")(0, choices)
    logp = bank_rewards(*args, np.random.default_rng(0))(0, choices)
    accuracy = first_token_accuracy(lab, train, DIGITS) / 100
    assert 0.5 < accuracy < 1  # neither all nor none: the count is what is tested
    torch.testing.assert_close(hits, accuracy + TIE_SCALE * logp, atol=1e-6, rtol=0)
    margin = bank_rewards(*args, np.random.default_rng(0), objective="margin")(0, choices)
    logps = torch.log_softmax(lab.forward([DIGITS.prompt([], q) for q in train]), -1)  # (40, V)
    target = first_token_ids(lab, train, DIGITS)[:, None]  # (40, 1)
    naive = logps.gather(1, target).squeeze(1) - logps.scatter(1, target, float("-inf")).max(-1).values
    assert ((naive > 0).float().mean() - accuracy).abs() < 1e-6  # > 0 exactly on the hits
    torch.testing.assert_close(margin, naive.mean()[None], atol=1e-4, rtol=0)


def test_answer_scores_count_whole_answers():
    """The whole-answer judge of refinement: a hit only where every valid token is the top
    one (padding after a shorter answer does not count), ties by the answer's log-prob."""
    from stv.methods.reward import TIE_SCALE, answer_scores

    logits = torch.zeros(3, 3, 5)  # (B, T, V)
    target = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    for t in range(3):
        logits[:, t, target[0, t]] = 4.0
    logits[1:, 2, 3], logits[1:, 2, 0] = 0.0, 4.0  # rows 1, 2: the third token is not the top one
    valid = torch.tensor([[True] * 3, [True] * 3, [True, True, False]])
    scores = answer_scores(logits, target, valid)
    logp = torch.log_softmax(logits, -1).gather(2, target[..., None]).squeeze(2)  # (B, T)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 1.0]) + TIE_SCALE * (logp * valid).sum(1))
