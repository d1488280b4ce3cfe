"""STV stages: scan, bank, REINFORCE, prefix-cached rewards, the artifact, and fit on every family."""

import numpy as np
import pytest
import torch

import stv
from stv.data import Example, digit_examples
from stv.heads import replace
from stv.methods.bank import build_bank
from stv.methods.fit import STVConfig, fit
from stv.methods.policy import reinforce
from stv.methods.reward import bank_rewards, first_token_ids
from stv.methods.scan import sensitivity_scan
from stv.models import LMM
from stv.tasks import DIGITS
from stv.testing import FAMILIES, build_tokenizer
from stv.vectors import ArtifactMismatchError, TaskVectors

from .conftest import TINY_STV_FLAGS


def _text_examples(n: int, seed: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    words = ["even", "odd", "small", "big"]
    return [
        Example(
            id=str(i),
            images=[],
            question=" ".join(rng.choice(list("abcdefgh"), 3)),
            answers=[words[i % 4]],
            metadata={"dataset": "digits:text"},
        )
        for i in range(n)
    ]


def test_scan_ranks_the_only_context_sensitive_head_first():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer([])
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            pad_token_id=tok.pad_token_id,
        )
    ).eval()
    # Every head but (layer 1, head 2) gets zero values, so only it can move with context.
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            v = layer.self_attn.v_proj.weight.view(4, 16, 64)
            for h in range(4):
                if (i, h) != (1, 2):
                    v[h] = 0
    lmm = LMM(model, tok, stv.HeadMap.from_model(model), name="constructed", family="llama")
    examples = _text_examples(12)
    pairs = [(DIGITS.prompt([], q), DIGITS.prompt(examples[:4], q)) for q in examples[4:]]
    scan = sensitivity_scan(lmm, pairs, batch_size=3, progress=False)
    assert scan.top_k(1) == [(1, 2)]
    others = scan.sensitivity.clone()
    others[1, 2] = 0
    assert scan.sensitivity[1, 2] > 0.01 and others.abs().max() < 1e-6
    assert scan.activations_at([(1, 2)]).shape == (8, 1, 16)


def test_bank_shapes_determinism_and_centroids():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    data = torch.tensor(np.concatenate([c + rng.normal(size=(20, 8)) * 0.01 for c in centres]), dtype=torch.float32)
    acts = torch.stack([data, data * 2], 1)  # (60, 2, 8)
    bank = build_bank(acts, clusters=3, seed=1)
    assert bank.shape == (2, 3, 8)
    torch.testing.assert_close(bank, build_bank(acts, clusters=3, seed=1))
    for c in centres:
        assert (bank[0] - torch.tensor(c, dtype=torch.float32)).norm(dim=-1).min() < 0.05
    assert build_bank(acts[:2], clusters=5).shape == (2, 2, 8)  # M capped at N


@pytest.mark.parametrize("good_arm", [0, 1])
def test_reinforce_moves_towards_the_rewarded_arm(good_arm):
    result = reinforce(
        lambda step, choices: (choices[:, 0] == good_arm).float(),
        locations=1,
        arms=2,
        steps=40,
        samples=16,
        progress=False,
    )
    assert result.probabilities[0, good_arm] > 0.9 and result.choice[0] == good_arm
    assert result.reward_curve[-1] > result.reward_curve[0]


def test_reinforce_locations_are_independent():
    # location 0 rewards arm 2, location 1 rewards arm 0
    reward = lambda step, c: (c[:, 0] == 2).float() + (c[:, 1] == 0).float()  # noqa: E731
    result = reinforce(reward, locations=2, arms=3, steps=60, samples=16, progress=False)
    assert result.choice.tolist() == [2, 0]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics2", "gemma3", "llama"])
def test_prefix_cached_rewards_equal_naive_forward(lmm_of, family):
    lmm = lmm_of(family)
    train = digit_examples("parity_word")[:20] if lmm.is_multimodal else _text_examples(20)
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


def test_artifact_round_trip_and_mismatch(tmp_path, lmm_of):
    lmm = lmm_of("llava")
    vectors = TaskVectors(
        torch.tensor([[0, 1], [1, 2]]),
        torch.randn(2, lmm.heads.head_dim),
        config={"num_layers": 2, "num_heads": 4, "architecture": type(lmm.model).__name__},
        bank=torch.randn(2, 3, lmm.heads.head_dim),
        probabilities=torch.rand(2, 3),
    )
    vectors.save_pretrained(tmp_path / "tv")
    loaded = TaskVectors.from_pretrained(tmp_path / "tv")
    torch.testing.assert_close(loaded.vectors, vectors.vectors)
    torch.testing.assert_close(loaded.bank, vectors.bank)
    assert loaded.location_list() == [(0, 1), (1, 2)] and loaded.config.num_heads == 4
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["tv"]  # no temp dirs left behind
    p = [DIGITS.prompt([], digit_examples("digit")[0])]
    base = lmm.forward(p)
    with loaded.apply(lmm):
        assert (lmm.forward(p) - base).abs().max() > 1e-4
    torch.testing.assert_close(lmm.forward(p), base)  # removed after the block
    wrong_dim = TaskVectors(torch.tensor([[0, 1]]), torch.randn(1, 8), config={"model": "other"})
    with pytest.raises(ArtifactMismatchError, match="head_dim 8"):
        wrong_dim.check_model(lmm)
    wrong_arch = TaskVectors(torch.tensor([[0, 1]]), torch.randn(1, 16), config={"num_layers": 32})
    with pytest.raises(ArtifactMismatchError, match="num_layers 32"):
        wrong_arch.check_model(lmm_of("llava"))
    with pytest.raises(FileNotFoundError, match="holds no task vectors"):
        TaskVectors.from_pretrained(tmp_path)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fit_then_generate_with_the_artifact(tmp_path, lmm_of, family):
    """Plumbing on every family (random weights): fit, save, load, generate with insertion."""
    lmm = lmm_of(family)
    train = digit_examples("parity_word")[:16] if lmm.is_multimodal else _text_examples(16)
    config = STVConfig(top_k=3, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    vectors, state = fit(lmm, train, config, progress=False)
    assert state.bank.shape == (3, 2, lmm.heads.head_dim) and len(state.policy.reward_curve) == 2
    vectors.save_pretrained(tmp_path / "tv")
    loaded = TaskVectors.from_pretrained(tmp_path / "tv")
    with loaded.apply(lmm):
        out = lmm.generate([DIGITS.prompt([], train[0])], max_new_tokens=3)
    assert len(out) == 1


def test_fit_resumes_a_finished_scan(tmp_path, lmm_of):
    lmm = lmm_of("llava")
    train = digit_examples("size_word")[:16]
    config = STVConfig(top_k=2, clusters=2, pairs=4, shots=2, steps=2, samples=4, batch_size=4)
    first, _ = fit(lmm, train, config, progress=False, workdir=tmp_path)
    calls = []
    handle = lmm.model.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    try:
        again, _ = fit(lmm, train, config, progress=False, workdir=tmp_path)
    finally:
        handle.remove()
    # only REINFORCE ran (a prefix pass and a last-token pass per step), no scan passes
    assert len(calls) == 2 * config.steps
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
    from stv.cli import main

    model = family_dir("idefics3")
    args = ["--model", model, "--dataset", "digits:parity_AB", "--out", str(tmp_path / "run"), *TINY_STV_FLAGS]
    assert main(["fit", *args]) == 0
    assert (tmp_path / "run" / "task_vectors.safetensors").is_file() and (tmp_path / "run" / "policy.png").is_file()
    assert (
        main(
            [
                "eval",
                "--model",
                model,
                "--dataset",
                "digits:parity_AB",
                "--vectors",
                str(tmp_path / "run"),
                "--limit",
                "4",
                "--first-token",
            ]
        )
        == 0
    )
    assert '"accuracy"' in capsys.readouterr().out
    assert (
        main(
            [
                "eval",
                "--model",
                family_dir("llava"),
                "--dataset",
                "digits:parity_AB",
                "--vectors",
                str(tmp_path / "run"),
                "--limit",
                "4",
                "--first-token",
            ]
        )
        == 2
    )
    assert "fitted on" in capsys.readouterr().err
    assert main(["eval", "--model", model, "--dataset", "digits:nope"]) == 2
    assert "unknown digits task" in capsys.readouterr().err


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


def test_relative_sensitivity_discounts_large_activations():
    from stv.methods.scan import ScanResult

    scan = ScanResult(
        torch.tensor([[1.0, 2.0], [4.0, 8.0]]),
        np.zeros((1, 4, 2), dtype=np.float16),
        query_norm=torch.tensor([[1.0, 1.0], [100.0, 100.0]]),
    )
    assert scan.top_k(2) == [(1, 1), (1, 0)]
    assert scan.top_k(2, "relative") == [(0, 1), (0, 0)]
    with pytest.raises(ValueError, match="'cosine' is not one of l2, mean_delta, consistency, relative"):
        scan.top_k(1, "cosine")
    with pytest.raises(ValueError, match="no statistics for the 'mean_delta'"):
        scan.top_k(1, "mean_delta")


def test_scan_sensitivity_registry_matches_a_hand_computation(lmm_of):
    """One scan gives every reading: mean ||delta|| (l2), ||mean delta||, their ratio."""
    from stv.methods.scan import record_prompts, sensitivity_scan

    lmm = lmm_of("llama")
    train = _text_examples(12)
    pairs = [(DIGITS.prompt([], q), DIGITS.prompt(train[i + 1 : i + 4], q)) for i, q in enumerate(train[:6])]
    scan = sensitivity_scan(lmm, pairs, batch_size=4, progress=False)
    deltas = record_prompts(lmm, [c for _, c in pairs]) - record_prompts(lmm, [q for q, _ in pairs])  # (T, L*H, D)
    shape = (lmm.heads.num_layers, lmm.heads.num_heads)
    assert torch.allclose(scan.scores("l2"), deltas.norm(dim=-1).mean(0).view(shape), atol=1e-4)
    assert torch.allclose(scan.scores("mean_delta"), deltas.mean(0).norm(dim=-1).view(shape), atol=1e-4)
    consistency = scan.scores("consistency")
    assert bool((consistency <= 1 + 1e-5).all()) and bool((consistency > 0).all())


def test_config_errors_are_clear(lmm_of):
    lmm = lmm_of("llama")
    train = _text_examples(6)
    with pytest.raises(ValueError, match="top_k=99 must be between 1 and the model's 8 heads"):
        fit(lmm, train, STVConfig(top_k=99), progress=False)
    with pytest.raises(ValueError, match="shots=8 needs more than 8 training examples, got 6"):
        fit(lmm, train, STVConfig(top_k=2, shots=8), progress=False)
    with pytest.raises(ValueError, match="queries_per_step=7"):
        fit(lmm, train, STVConfig(top_k=2, shots=2, queries_per_step=7), progress=False)


@pytest.mark.parametrize("ranking", ["l2", "relative"])
def test_cli_scan_ranks_by_the_chosen_sensitivity(tmp_path, family_dir, ranking):
    import json

    from stv.cli import main

    out = tmp_path / "scan"
    assert (
        main(
            [
                "scan",
                "--model",
                family_dir("llava"),
                "--dataset",
                "digits:parity_AB",
                "--out",
                str(out),
                "--top-k",
                "3",
                "--pairs",
                "4",
                "--context-shots",
                "2",
                "--sensitivity",
                ranking,
            ]
        )
        == 0
    )
    saved = json.loads((out / "sensitivity.json").read_text())
    scores = torch.tensor(saved["scores"])
    heads = scores.shape[1]
    expected = [[int(i) // heads, int(i) % heads] for i in torch.topk(scores.flatten(), 3).indices]
    assert saved["ranking"] == ranking and saved["top_k"] == expected
    if ranking == "l2":
        assert saved["scores"] == saved["sensitivity"]
    else:
        assert saved["scores"] != saved["sensitivity"]
