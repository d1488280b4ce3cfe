"""`stv bench --device cuda`'s model shapes and stages, checked on the CPU with tiny builds."""

import numpy as np
import pytest
import torch

from stv.data.digits import digit_examples
from stv.experiments.bench_gpu import agreement, agreement_prompt, run_gpu
from stv.testing.shapes import SHAPES, build_shape


@pytest.mark.parametrize(
    "name, layers, heads, kv_heads, head_dim, vocab, image_tokens",
    [("qwen2-vl-7b", 28, 28, 4, 128, 152064, 256), ("idefics2-8b", 32, 32, 8, 128, 32003, 64)],
)
@pytest.mark.slow
def test_real_shapes_follow_the_published_configs(name, layers, heads, kv_heads, head_dim, vocab, image_tokens):
    """The configs the GPU benchmark builds (no weights here): layers, heads, vocabulary, and
    how many tokens a 448x448 image becomes through the processor."""
    _, config, processor = SHAPES[name]()
    text = config.text_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (layers, heads, kv_heads)
    assert text.hidden_size // text.num_attention_heads == head_dim and text.vocab_size == vocab
    image = digit_examples("parity_AB", size=448)[0].images[0]
    placeholder = "<|vision_start|><|image_pad|><|vision_end|>" if name.startswith("qwen") else "<image>"
    ids = processor(text=[placeholder + " odd"], images=[[image]], return_tensors="pt")["input_ids"]
    assert int((ids == config.image_token_id).sum()) == image_tokens


@pytest.mark.slow
def test_every_stage_runs_and_cached_rewards_match_naive_ones():
    """The whole shape pipeline on a tiny Qwen2-VL build on the CPU: every stage reports a
    time, the ratios are computed from them, and the prefix-cached rewards equal one forward
    per candidate (float32: to 1e-5)."""
    torch.set_num_threads(1)
    lines, out = run_gpu(["qwen2-vl-7b"], "cpu", tiny=True, profile=False)
    result = out["shapes"]["qwen2-vl-7b"]
    stages = [row["stage"].split(" (")[0] for row in result["stages"]]
    assert stages[:6] == ["build", "scan", "bank", "REINFORCE", "REINFORCE", "MTV"]
    assert all(row["seconds"] > 0 for row in result["stages"])
    assert result["ratios"]["stv_location_s"] == pytest.approx(
        result["stages"][1]["seconds"] + result["stages"][2]["seconds"]
    )
    fp32 = [a for a in result["agreement"] if a["dtype"] == "float32"][0]
    assert fp32["max_reward_diff"] < 1e-5 and fp32["same_best"]
    assert any("qwen2-vl-7b (tiny)" in line for line in lines)


def test_agreement_sees_a_wrong_cached_path(monkeypatch):
    """The check can fail: with the cached pass's writes dropped, the rewards part. Three of
    the eight heads are written: with every head written the last token's attention is
    thrown away, and a wrong prefix or mask would go unseen."""
    lmm = build_shape("qwen2-vl-7b", "cpu", torch.float32, tiny=True)
    assert agreement(lmm, 4, 3, agreement_prompt(64))["max_reward_diff"] < 1e-5
    monkeypatch.setattr(type(lmm), "candidates", lambda self, locations, values, repeats: _nothing())
    assert agreement(lmm, 4, 3, agreement_prompt(64))["max_reward_diff"] > 1e-3
    assert np.isfinite(agreement(lmm, 4, 3, agreement_prompt(64))["logits_rel_err"])


def _nothing():
    from contextlib import nullcontext

    return nullcontext()
