"""Continuation vectors: written at generated tokens 1..T under prompt_last, recorded at the
same positions a teacher-forced many-shot prompt has them, and searched (the next-token reward
and the artifact of the continuation search)."""

import numpy as np
import pytest
import torch

from stv.config import STVConfig
from stv.data import load_dataset
from stv.errors import StvError
from stv.hooks.heads import record_heads, write_heads
from stv.methods.continuation import continuation_means, with_continuation
from stv.methods.fit import fit
from stv.methods.reward import bank_rewards
from stv.models.compat import cache_keyword, cache_of
from stv.tasks import task_for
from stv.vectors import TaskVectors


def test_generated_tokens_get_their_continuation_rows(lmm_of):
    lmm = lmm_of("llama")
    heads = lmm.heads
    first = torch.full((1, heads.head_dim), 7.0)
    later = torch.stack([torch.full((1, heads.head_dim), 8.0), torch.full((1, heads.head_dim), float("nan"))])
    seen = []

    def observe(module, args):  # registered after replace's hook: sees what it wrote
        head = args[0][:, -1].view(args[0].shape[0], heads.num_heads, heads.head_dim)[0, 3]
        seen.append(next((v for v in (7.0, 8.0) if torch.allclose(head, torch.full_like(head, v))), None))

    with write_heads(lmm.model, heads, [(1, 3)], first, policy="prompt_last", continuation=later):
        handle = heads.projections[1].register_forward_pre_hook(observe)
        try:
            lmm.generate([["go on"]], max_new_tokens=5, min_new_tokens=5)
        finally:
            handle.remove()
    assert seen == [7.0, 8.0, None, None, None]  # prompt, token 1, token 2 left alone (NaN), then nothing
    with write_heads(lmm.model, heads, [(1, 3)], first, policy="prompt_last", continuation=later):
        with pytest.raises(ValueError, match="continuation needs the KV cache"):
            lmm.generate([["go on"]], max_new_tokens=3, use_cache=False)
    with pytest.raises(ValueError, match="policy 'every_step' already writes every token"):
        with write_heads(lmm.model, heads, [(1, 3)], first, policy="every_step", continuation=later):
            pass
    with pytest.raises(ValueError, match="continuation must have shape"):
        with write_heads(lmm.model, heads, [(1, 3)], first, policy="prompt_last", continuation=later[0]):
            pass


def test_means_are_outputs_at_the_answer_positions(lmm_of):
    """Step 1 of one prompt = the head's output at the last position of prompt + first answer token."""
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:20]
    task = task_for(train)
    locs = [(0, 1), (1, 2)]
    means = continuation_means(
        lmm, train, task, locs, steps=2, prompts=1, shots=2, batch_size=1, rng=np.random.default_rng(3)
    )
    rng = np.random.default_rng(3)  # the same draw as inside continuation_means
    query = train[int(rng.choice(len(train), 1, replace=False)[0])]
    from stv.tasks import sample_demos

    text = task.prompt(sample_demos(train, query, 2, rng), query)
    first = lmm.answer_ids([task.continuation(query) + "\n"])[0][0]
    inputs = lmm.prepare([text], positions=False)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([[first]])], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], 1)
    with record_heads(lmm.heads, locs) as rec, torch.no_grad():
        lmm.model(**inputs)
    torch.testing.assert_close(means[0], rec.values[0], atol=1e-4, rtol=1e-4)
    assert means.shape == (2, 2, lmm.heads.head_dim)


def test_artifact_round_trip_and_fingerprint(lmm_of, tmp_path):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:20]
    vectors = TaskVectors(torch.tensor([[0, 1]]), torch.zeros(1, lmm.heads.head_dim), config={"policy": "every_step"})
    cont = with_continuation(vectors, lmm, train, task_for(train), steps=3, prompts=4, shots=2, batch_size=2)
    assert cont.config.policy == "prompt_last" and cont.continuation.shape == (3, 1, lmm.heads.head_dim)
    assert cont.fingerprint() != vectors.fingerprint()
    cont.save_pretrained(tmp_path / "v")
    back = TaskVectors.from_pretrained(tmp_path / "v")
    assert torch.equal(torch.nan_to_num(back.continuation, 9.0), torch.nan_to_num(cont.continuation, 9.0))
    with pytest.raises(ValueError, match="continuation"):
        TaskVectors(vectors.locations, vectors.vectors, continuation=torch.zeros(3, 2, lmm.heads.head_dim))


def test_next_token_reward_is_the_log_prob_after_the_first_answer_token(lmm_of):
    """bank_rewards(after=...) on the prefix cache and fanned-out candidates = one prompt at a
    time: the fitted vectors written in the prompt pass, the candidate in the pass of the first
    answer token, the log-prob of the second (or of the line break)."""
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:3]
    task = task_for(train)
    heads, gen = lmm.heads, torch.Generator().manual_seed(0)
    fitted = TaskVectors(torch.tensor([[0, 0], [1, 2]]), torch.randn(2, heads.head_dim, generator=gen))
    everywhere = heads.all_locations()
    means = torch.randn(len(everywhere), heads.head_dim, generator=gen)
    bank = torch.stack([torch.full_like(means, float("nan")), means], 1)
    choices = torch.randint(0, 2, (3, len(everywhere)), generator=gen)
    reward = bank_rewards(lmm, train, task, everywhere, bank, len(train), np.random.default_rng(0), after=fitted)
    got = reward(0, choices)
    want = torch.zeros(len(choices))
    for s, choice in enumerate(choices):
        for query in train:
            ids = lmm.answer_ids([task.continuation(query) + "\n"])[0]
            inputs = lmm.prepare([task.prompt([], query)], positions=False)
            n = inputs["input_ids"].shape[1]
            with torch.no_grad():
                with write_heads(lmm.model, heads, fitted.location_list(), fitted.vectors):
                    cache = cache_of(lmm.model(**inputs, use_cache=True))
                with write_heads(lmm.model, heads, everywhere, bank[torch.arange(len(everywhere)), choice]):
                    logits = lmm.model(
                        input_ids=torch.tensor([[ids[0]]]),
                        attention_mask=torch.ones(1, n + 1, dtype=torch.long),
                        **{cache_keyword(lmm.model): cache},
                        position_ids=torch.tensor([[n]]),
                    ).logits[0, -1]
            want[s] += torch.log_softmax(logits.float(), -1)[ids[1]] / len(train)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_searched_continuation_artifact(lmm_of, tmp_path):
    """The union of both searches' heads, NaN where a head is written at one position only;
    saved, loaded and generated with; the settings that cannot work are refused."""
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:24]
    config = STVConfig.plus(
        top_k=4,
        clusters=2,
        pairs=6,
        shots=2,
        steps=2,
        samples=4,
        batch_size=4,
        continuation_search=3,
        final_items=4,
        refine=0,  # the search's heads only: a correction adds every head (NaN, shifted)
    )
    vectors = fit(lmm, train, config, progress=False)
    log = vectors.log
    assert "continuation_search" in log.timings and vectors.config.policy == "prompt_last"
    written_first = ~torch.isnan(vectors.vectors).any(-1)
    written_later = ~torch.isnan(vectors.continuation[0]).any(-1)
    assert vectors.continuation.shape == (1, len(vectors.locations), lmm.heads.head_dim)
    assert bool((written_first | written_later).all())  # no location written nowhere
    assert vectors.config.extra["continuation_search"]["heads"] == int(written_later.sum())
    vectors.save_pretrained(tmp_path / "v")
    back = TaskVectors.from_pretrained(tmp_path / "v")
    prompt = [task_for(train).prompt([], train[0])]
    with vectors.apply(lmm):
        fitted = lmm.generate(prompt, max_new_tokens=3)
    with back.apply(lmm):
        assert lmm.generate(prompt, max_new_tokens=3) == fitted
    for bad in ({"policy": "every_step"}, {"continuation": 2}, {"continuation_search": -1}):
        with pytest.raises(StvError, match="continuation_search"):
            STVConfig.plus(**{"continuation_search": 3, **bad}).check()


@pytest.mark.slow
def test_continuation_search_is_skipped_without_a_second_answer_token():
    """The lab's word-level tokenizer gives " even\\n" one token: nothing to search for."""
    from stv.data import digit_examples
    from stv.experiments.lab import load_lab

    lab = load_lab()
    train = digit_examples("parity_word")[:40]
    config = STVConfig.plus(clusters=2, pairs=8, shots=2, steps=2, samples=4, batch_size=8, restarts=1)
    vectors = fit(lab, train, config, progress=False)
    assert vectors.config.extra["continuation_search"]["steps"] == 0 and vectors.continuation is None
