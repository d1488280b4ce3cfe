"""The sensitivity scan: which heads it ranks first, under every score of the registry."""

import numpy as np
import pytest
import torch

import stv
from stv.methods.scan import sensitivity_scan
from stv.models import LMM
from stv.tasks import DIGITS
from stv.testing import build_tokenizer

from .conftest import text_examples


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
    examples = text_examples(12)
    pairs = [(DIGITS.prompt([], q), DIGITS.prompt(examples[:4], q)) for q in examples[4:]]
    scan = sensitivity_scan(lmm, pairs, batch_size=3, progress=False)
    assert scan.top_k(1) == [(1, 2)]
    others = scan.sensitivity.clone()
    others[1, 2] = 0
    assert scan.sensitivity[1, 2] > 0.01 and others.abs().max() < 1e-6
    assert scan.activations_at([(1, 2)]).shape == (8, 1, 16)


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
    train = text_examples(12)
    pairs = [(DIGITS.prompt([], q), DIGITS.prompt(train[i + 1 : i + 4], q)) for i, q in enumerate(train[:6])]
    scan = sensitivity_scan(lmm, pairs, batch_size=4, progress=False)
    deltas = record_prompts(lmm, [c for _, c in pairs]) - record_prompts(lmm, [q for q, _ in pairs])  # (T, L*H, D)
    shape = (lmm.heads.num_layers, lmm.heads.num_heads)
    assert torch.allclose(scan.scores("l2"), deltas.norm(dim=-1).mean(0).view(shape), atol=1e-4)
    assert torch.allclose(scan.scores("mean_delta"), deltas.mean(0).norm(dim=-1).view(shape), atol=1e-4)
    consistency = scan.scores("consistency")
    assert bool((consistency <= 1 + 1e-5).all()) and bool((consistency > 0).all())
    locations = [(0, 1), (1, 0)]
    columns = [layer * shape[1] + head for layer, head in locations]
    torch.testing.assert_close(scan.shifts_at(locations), deltas.mean(0)[columns], atol=1e-4, rtol=1e-4)


def test_a_finished_scan_is_reused_with_its_mean_shift(lmm_of, tmp_path):
    from stv.methods.scan import sensitivity_scan

    lmm = lmm_of("llama")
    train = text_examples(8)
    pairs = [(DIGITS.prompt([], q), DIGITS.prompt(train[i + 1 : i + 3], q)) for i, q in enumerate(train[:4])]
    first = sensitivity_scan(lmm, pairs, batch_size=4, workdir=tmp_path, progress=False, key="k")
    again = sensitivity_scan(lmm, pairs, batch_size=4, workdir=tmp_path, progress=False, key="k")
    assert again.reused and not first.reused
    torch.testing.assert_close(again.mean_shift, first.mean_shift)
    (tmp_path / "mean_shift.npy").unlink()  # a marker whose files are not all there vouches for nothing
    assert not sensitivity_scan(lmm, pairs, batch_size=4, workdir=tmp_path, progress=False, key="k").reused


@pytest.mark.parametrize("ranking", ["l2", "relative"])
def test_cli_scan_ranks_by_the_chosen_sensitivity(tmp_path, family_dir, ranking):
    import json

    from stv.cli.main import main

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
