"""Head hooks on every tiny family: record, replace, padding, generate policies, clean-up."""

import pytest
import torch

import stv
from stv.hooks.headmap import HeadDiscoveryError
from stv.hooks.heads import record_heads, write_heads
from stv.testing import FAMILIES

from .conftest import prompt

ALL = sorted(FAMILIES)


@pytest.mark.parametrize("family", ALL)
def test_record_matches_attention_output(lmm_of, family):
    """o_proj(recorded heads, concatenated) must equal the attention module's output at the last token."""
    lmm = lmm_of(family)
    heads = lmm.heads
    outputs = {}
    attn_modules = [lmm.heads.decoder.layers[i].self_attn for i in range(heads.num_layers)]
    handles = [
        m.register_forward_hook(lambda mod, a, out, i=i: outputs.__setitem__(i, out[0][:, -1].detach()))
        for i, m in enumerate(attn_modules)
    ]
    try:
        with record_heads(heads) as rec, torch.no_grad():
            lmm.model(**lmm.prepare([prompt(lmm, 2, "what digit")]))
    finally:
        for h in handles:
            h.remove()
    values = rec.values.view(1, heads.num_layers, heads.num_heads * heads.head_dim)
    assert rec.values.shape == (1, heads.num_layers * heads.num_heads, heads.head_dim)
    for layer, proj in enumerate(heads.projections):
        by_hand = proj(values[:, layer].to(proj.weight.dtype))
        torch.testing.assert_close(by_hand, outputs[layer], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ALL)
def test_replace_with_own_value_is_identity_and_zeros_change(lmm_of, family):
    lmm = lmm_of(family)
    p = [prompt(lmm, 1, "which one")]
    locs = [(0, 1), (lmm.heads.num_layers - 1, 2)]
    base = lmm.forward(p)
    with record_heads(lmm.heads, locs) as rec, torch.no_grad():
        lmm.model(**lmm.prepare(p))
    with write_heads(lmm.model, lmm.heads, locs, rec.values[0]):
        same = lmm.forward(p)
    with write_heads(lmm.model, lmm.heads, locs, torch.zeros(len(locs), lmm.heads.head_dim)):
        zeroed = lmm.forward(p)
    assert (same - base).abs().max() <= 1e-5
    assert (zeroed - base).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
def test_shifts_are_added_after_the_write(lmm_of, family):
    """A NaN value plus a shift moves the head's own output; a value plus a shift writes their sum."""
    lmm = lmm_of(family)
    p = [prompt(lmm, 1, "which one")]
    last = lmm.heads.num_layers - 1
    locs = [(last, 0), (last, 2)]  # one layer: an edit cannot change the other head's own output
    with record_heads(lmm.heads, locs) as rec, torch.no_grad():
        lmm.model(**lmm.prepare(p))
    own, shift = rec.values[0], torch.randn(len(locs), lmm.heads.head_dim)
    with write_heads(lmm.model, lmm.heads, locs, own + shift):
        by_hand = lmm.forward(p)
    nan = torch.full_like(own, float("nan"))
    with write_heads(lmm.model, lmm.heads, locs, nan, shifts=shift):
        steered = lmm.forward(p)
    torch.testing.assert_close(steered, by_hand, atol=1e-5, rtol=1e-4)
    value = torch.randn_like(own)
    with write_heads(lmm.model, lmm.heads, locs, value, shifts=shift):
        summed = lmm.forward(p)
    with write_heads(lmm.model, lmm.heads, locs, value + shift):
        torch.testing.assert_close(summed, lmm.forward(p), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="shifts"), write_heads(lmm.model, lmm.heads, locs, own, shifts=shift[:1]):
        pass
    with pytest.raises(ValueError, match="NaN"), write_heads(lmm.model, lmm.heads, locs, own, shifts=nan):
        pass


@pytest.mark.parametrize("family", ALL)
def test_left_padded_batch_records_like_single_prompts(lmm_of, family):
    lmm = lmm_of(family)
    a = prompt(lmm, 1, "short", seed=1)
    b = prompt(lmm, 3, "a much longer question about the three items", seed=5)
    with record_heads(lmm.heads) as batch, torch.no_grad():
        lmm.model(**lmm.prepare([a, b]))
    singles = []
    for p in (a, b):
        with record_heads(lmm.heads) as one, torch.no_grad():
            lmm.model(**lmm.prepare([p]))
        singles.append(one.values)
    torch.testing.assert_close(batch.values, torch.cat(singles), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("policy", ["every_step", "prompt_last"])
def test_generate_policy(lmm_of, family, policy):
    """Every forward call of generate is observed after our hook: which ones carry the vector?"""
    lmm = lmm_of(family)
    heads = lmm.heads
    loc, value = (1, 3), torch.full((1, heads.head_dim), 7.0)
    seen = []

    def observe(module, args):
        head = args[0][:, -1].view(args[0].shape[0], heads.num_heads, heads.head_dim)[:, 3]
        seen.append(bool(torch.allclose(head, value.to(head.dtype).expand_as(head))))

    with write_heads(lmm.model, heads, [loc], value, policy=policy):
        handle = heads.projections[1].register_forward_pre_hook(observe)  # runs after ours
        try:
            lmm.generate([prompt(lmm, 1, "go"), prompt(lmm, 2, "go on")], max_new_tokens=4, min_new_tokens=4)
        finally:
            handle.remove()
    assert len(seen) == 4  # prompt pass + 3 decode steps
    expected = [True] * 4 if policy == "every_step" else [True, False, False, False]
    assert seen == expected


def _greedy(lmm, prompts, tokens: int = 3):
    """``generate``'s first ``tokens`` greedy tokens (B, tokens) and the logits before each,
    under whatever writers are active."""
    inputs = lmm.prepare(prompts, positions=False)
    out = lmm.model.generate(
        **inputs,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=lmm.tokenizer.pad_token_id,
    )
    return out.sequences[:, inputs["input_ids"].shape[1] :], out.logits


@pytest.mark.parametrize("family", ["llama", "qwen2_vl"])
@pytest.mark.parametrize("policy", ["every_step", "prompt_last"])
def test_teacher_forcing_writes_where_generate_does(lmm_of, family, policy):
    """Teacher-forced passes (lmm.score, refinement over the whole answer) are one decode:
    under either policy, and with a continuation row, each step's logits equal generate's."""
    lmm = lmm_of(family)
    heads = lmm.heads
    locs = [(0, 1), (1, 3)]
    values = torch.randn(2, heads.head_dim, generator=torch.Generator().manual_seed(0)) * 3  # (K, D)
    later = torch.randn(1, 2, heads.head_dim, generator=torch.Generator().manual_seed(1)) * 3  # (T, K, D)
    prompts = [prompt(lmm, 1, "go"), prompt(lmm, 2, "go on")]
    cont = later if policy == "prompt_last" else None
    with write_heads(lmm.model, heads, locs, values, policy=policy, continuation=cont), torch.no_grad():
        with write_heads(lmm.model, heads, locs[:1], values[:1], policy=policy):
            pass  # a writer entered and left inside leaves the outer one's pass count alone
        target, generated = _greedy(lmm, prompts)
        forced = list(lmm.teacher_forced(lmm.prepare(prompts), target, torch.ones_like(target, dtype=torch.bool)))
    assert len(forced) == 3
    for step, logits in enumerate(forced):
        torch.testing.assert_close(logits.float(), generated[step].float(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("family", ALL)
def test_prefix_and_one_pass_answer_equal_generate(lmm_of, family):
    """Refinement's fast path: the prompt but its last token cached outside the writer, then
    the last token (written) and the answer tokens after it in one pass (prompt_last writes
    nothing there) give generate's logits at every step."""
    lmm = lmm_of(family)
    heads = lmm.heads
    locs = [(0, 1), (1, 3)]
    values = torch.randn(2, heads.head_dim, generator=torch.Generator().manual_seed(0)) * 3  # (K, D)
    prompts = [prompt(lmm, 1, "go"), prompt(lmm, 2, "go on")]
    with torch.no_grad():
        with write_heads(lmm.model, heads, locs, values, policy="prompt_last"):
            target, generated = _greedy(lmm, prompts)
        prefix = lmm.prefix(prompts, grad=True)
        with write_heads(lmm.model, heads, locs, values, policy="prompt_last"):
            forced = list(lmm.teacher_forced(prefix, target, torch.ones_like(target, dtype=torch.bool), True))
    assert len(forced) == 3
    for step, logits in enumerate(forced):
        torch.testing.assert_close(logits.float(), generated[step].float(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("family", ALL)
def test_answer_logits_in_one_pass_equal_teacher_forcing(lmm_of, family):
    """LoRA's training pass (prompt and answer at once, answers of different lengths padded
    on the right) gives the step-by-step decode's logits wherever a row has a token."""
    lmm = lmm_of(family)
    prompts = [prompt(lmm, 1, "go"), prompt(lmm, 2, "go on further")]
    target, valid = lmm.answer_targets([" yes or no\n", " ok"])  # (B, T) each, the second row padded
    assert not valid.all()
    with torch.no_grad():
        inputs = lmm.prepare(prompts)
        at_once = lmm.answer_logits(inputs, target, valid)  # (B, T, V)
        stepped = torch.stack(list(lmm.teacher_forced(inputs, target, valid)), 1)
    assert at_once.shape == stepped.shape
    torch.testing.assert_close(at_once[valid].float(), stepped[valid].float(), atol=1e-3, rtol=1e-3)


def test_per_row_values_and_shape_errors(lmm_of):
    lmm = lmm_of("llava")
    p = [prompt(lmm, 1, "a"), prompt(lmm, 2, "b")]
    locs = [(0, 0)]
    values = torch.stack([torch.zeros(1, lmm.heads.head_dim), torch.ones(1, lmm.heads.head_dim) * 3])
    with write_heads(lmm.model, lmm.heads, locs, values):
        with record_heads(lmm.heads, locs) as rec, torch.no_grad():
            lmm.model(**lmm.prepare(p))
    # record hooks were registered after replace's, so they see the replaced input
    torch.testing.assert_close(rec.values, values)
    with pytest.raises(ValueError, match="values must have shape"):
        with write_heads(lmm.model, lmm.heads, locs, torch.zeros(2, lmm.heads.head_dim)):
            pass
    with pytest.raises(ValueError, match="outside this model"):
        with write_heads(lmm.model, lmm.heads, [(99, 0)], torch.zeros(1, lmm.heads.head_dim)):
            pass


def test_generate_refuses_no_cache_and_chunked_prefill(lmm_of):
    lmm = lmm_of("llama")
    value = torch.zeros(1, lmm.heads.head_dim)
    with write_heads(lmm.model, lmm.heads, [(0, 0)], value):
        with pytest.raises(ValueError, match="needs the KV cache"):
            lmm.generate([prompt(lmm, 0, "a")], max_new_tokens=2, use_cache=False)
        with pytest.raises(ValueError, match="chunked prefill"):
            lmm.generate([prompt(lmm, 0, "a")], max_new_tokens=2, prefill_chunk_size=4)
    with write_heads(lmm.model, lmm.heads, [(0, 0)], value, policy="prompt_last"):
        assert len(lmm.generate([prompt(lmm, 0, "a")], max_new_tokens=2, use_cache=False)) == 1


def test_hooks_removed_after_exit_and_after_exception(lmm_of):
    lmm = lmm_of("qwen2_vl")
    value = torch.zeros(1, lmm.heads.head_dim)

    def hook_count():
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in lmm.model.modules())

    before = hook_count()
    with write_heads(lmm.model, lmm.heads, [(0, 0)], value), record_heads(lmm.heads):
        assert hook_count() > before
        assert "generate" in lmm.model.__dict__
    assert hook_count() == before and "generate" not in lmm.model.__dict__
    with pytest.raises(RuntimeError, match="boom"):
        with write_heads(lmm.model, lmm.heads, [(0, 0)], value), record_heads(lmm.heads):
            raise RuntimeError("boom")
    assert hook_count() == before and "generate" not in lmm.model.__dict__


def test_idefics2_perceiver_is_never_hooked(lmm_of):
    lmm = lmm_of("idefics2")
    perceiver = [m for name, m in lmm.model.named_modules() if "perceiver" in name and name.endswith("o_proj")]
    assert perceiver, "the tiny Idefics2 should have perceiver o_proj modules"
    hooked = {id(p) for p in lmm.heads.projections}
    assert not hooked & {id(m) for m in perceiver}
    decoder = {id(m) for m in lmm.model.get_decoder().modules()}
    assert hooked <= decoder and len(hooked) == lmm.model.config.text_config.num_hidden_layers


def test_module_pattern_override_and_clear_errors(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=64)).eval()
    heads = stv.HeadMap.from_model(model, pattern="transformer.h.{layer}.attn.c_proj")
    assert (heads.num_layers, heads.num_heads, heads.head_dim) == (2, 4, 8)
    ids = torch.tensor([[1, 2, 3, 4]])
    with record_heads(heads) as rec, torch.no_grad():
        model(ids)
    with write_heads(model, heads, heads.all_locations(), rec.values[0]), torch.no_grad():
        same = model(ids).logits
    torch.testing.assert_close(same, model(ids).logits)
    with pytest.raises(HeadDiscoveryError, match="matched nothing"):
        stv.HeadMap.from_model(model, pattern="transformer.blocks.{layer}.attn.c_proj")
    with pytest.raises(HeadDiscoveryError, match="must contain"):
        stv.HeadMap.from_model(model, pattern="transformer.h.0.attn.c_proj")


def test_record_at_given_positions(lmm_of):
    lmm = lmm_of("qwen2")
    inputs = lmm.prepare([prompt(lmm, 0, "one two"), prompt(lmm, 0, "three four five six")])
    seen = {}
    handle = lmm.heads.projections[1].register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
    try:
        with record_heads(lmm.heads, [(1, 2)], positions=[3, 5]) as rec, torch.no_grad():
            lmm.model(**inputs)
    finally:
        handle.remove()
    by_hand = torch.stack([seen["x"][0, 3], seen["x"][1, 5]]).view(2, 4, 16)[:, 2]
    torch.testing.assert_close(rec.values[:, 0], by_hand)
