"""Choosing the insertion schedule after a fit: each schedule scored as eval scores it, the
better one kept, a tie going to prompt_last."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stv.config import POLICIES, STVConfig
from stv.data import digit_examples
from stv.evaluate import generation_accuracy
from stv.experiments.lab import load_lab
from stv.methods.fit import fit
from stv.methods.schedule import choose_schedule, schedule_scores
from stv.tasks import DIGITS, task_for
from stv.vectors import TaskVectors

from .conftest import text_examples


@pytest.fixture(scope="module")
def lab():
    return load_lab()


def test_scores_are_evals_exact_match_and_a_tie_keeps_prompt_last(lab):
    train = digit_examples("parity_word")[:100]
    config = STVConfig.paper(steps=3, pairs=32, clusters=8, samples=8, batch_size=16, schedule_items=16)
    vectors = fit(lab, train, config, DIGITS, progress=False)
    log = vectors.log
    assert "schedule" in log.timings and set(vectors.config.extra["schedule_scores"]) == set(POLICIES)
    queries = digit_examples("parity_word", "test")[:32]
    scores = schedule_scores(lab, vectors, queries, DIGITS, len(queries), np.random.default_rng(0))
    for policy in POLICIES:  # the evaluator's exact match on the same queries (answer: 1 token + 2)
        _, exact = generation_accuracy(lab, queries, DIGITS, vectors=vectors, policy=policy, max_new_tokens=3)
        assert scores[policy] == pytest.approx(exact)
    # one-token answers and a line break after them: both schedules write the same answers
    assert scores["every_step"] == scores["prompt_last"] > 50
    every = replace(vectors, config=vectors.config.with_(policy="every_step"))
    assert choose_schedule(lab, every, queries, DIGITS, len(queries), np.random.default_rng(0)).config.policy == (
        "prompt_last"
    )


@pytest.mark.parametrize("wanted", POLICIES)
def test_the_schedule_whose_answers_are_right_is_kept(lmm_of, wanted):
    """References made from what one schedule generates: that schedule must be chosen."""
    lmm = lmm_of("llama")
    examples = text_examples(12)
    task = task_for(examples)
    gen = torch.Generator().manual_seed(0)
    values = 4 * torch.randn(4, lmm.heads.head_dim, generator=gen)
    vectors = TaskVectors(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]), values, config={"policy": "prompt_last"})
    prompts = [task.prompt([], e) for e in examples]
    with vectors.apply(lmm, wanted):
        texts = lmm.decode(lmm.generate_ids(prompts, max_new_tokens=12))
    answered = [replace(e, answers=[task.postprocess(t)]) for e, t in zip(examples, texts)]
    answered = [e for e in answered if e.answers[0]]
    scores = schedule_scores(lmm, vectors, answered, task, len(answered), np.random.default_rng(0))
    other = next(p for p in POLICIES if p != wanted)
    assert scores[wanted] > scores[other]
    chosen = choose_schedule(lmm, vectors, answered, task, len(answered), np.random.default_rng(0))
    assert chosen.config.policy == wanted and chosen.config.extra["schedule_scores"] == scores
    torch.testing.assert_close(chosen.vectors, vectors.vectors)  # only the schedule changed
