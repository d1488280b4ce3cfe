"""Model loading, prompt rendering, generate and teacher-forced scoring on every tiny family."""

import json

import pytest
import torch

import stv
from stv.hooks.headmap import HeadDiscoveryError
from stv.models import ModelLoadError
from stv.testing import FAMILIES

from .conftest import prompt

ALL = sorted(FAMILIES)


@pytest.mark.parametrize("family", ALL)
def test_load_render_generate(lmm_of, family):
    lmm = lmm_of(family)
    assert lmm.family and lmm.heads.num_layers == 2 and lmm.heads.num_heads == 4
    prompts = [prompt(lmm, 1, "what"), prompt(lmm, 2, "and this")]
    for mode in ("raw", "chat"):
        text, images = lmm.render(prompts[1], mode)
        assert len(images) == (2 if lmm.is_multimodal else 0)
        if lmm.is_multimodal:
            assert text.count(lmm.image_placeholder) == 2
        out = lmm.generate(prompts, max_new_tokens=3, mode=mode)
        assert len(out) == 2 and all(isinstance(o, str) for o in out)


@pytest.mark.parametrize("family", ALL)
def test_score_equals_one_full_forward(lmm_of, family):
    """Step-by-step scoring (what insertion needs) must equal one teacher-forced forward."""
    lmm = lmm_of(family)
    p, answer = prompt(lmm, 2, "name it"), "even odd"
    stepwise = lmm.score([p, prompt(lmm, 1, "x")], [answer, "a"])[0]
    inputs = lmm.prepare([p], positions=False)
    ids = torch.tensor([lmm.answer_ids([answer])[0]])
    n = inputs["input_ids"].shape[1]
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], ids], 1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in full:
            full[key] = torch.cat([full[key], torch.zeros_like(ids)], 1)
    with torch.no_grad():
        logits = lmm.model(**full).logits[0, n - 1 : -1].float()
    by_hand = torch.log_softmax(logits, -1).gather(1, ids[0][:, None]).sum()
    assert abs(stepwise.item() - by_hand.item()) < 1e-4
    first = lmm.score([p], [answer], first_token_only=True)[0]
    assert abs(first.item() - torch.log_softmax(logits[0], -1)[ids[0, 0]].item()) < 1e-4


def test_text_only_model_rejects_images(lmm_of):
    from .conftest import random_image

    lmm = lmm_of("llama")
    with pytest.raises(ValueError, match="text-only"):
        lmm.render(["look", random_image(0)])


def test_not_a_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="no config.json"):
        stv.load_model(tmp_path)


def test_unknown_architecture(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path
    )
    with pytest.raises(ModelLoadError, match="not a transformers image-text-to-text or causal LM"):
        stv.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my_private_lmm"}))
    with pytest.raises(ModelLoadError, match="cannot read a model config"):
        stv.load_model(tmp_path)


def test_missing_weights(tmp_path, family_dir):
    import shutil

    shutil.copytree(family_dir("llama"), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load the weights"):
        stv.load_model(tmp_path / "m")


def test_model_without_heads_found(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=32)).save_pretrained(tmp_path)
    with pytest.raises(HeadDiscoveryError, match="pass an explicit module pattern"):
        stv.load_model(tmp_path)


def test_build_cli_lists_and_builds(tmp_path, capsys):
    from stv.testing import main

    main(["list"])
    assert set(capsys.readouterr().out.split()) == set(FAMILIES)
    main(["build", "llama", str(tmp_path / "m")])
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "llama"
