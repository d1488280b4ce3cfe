"""The public API a user meets first: the default config, fit -> artifact, apply / attach on a
plain transformers model, the hub path, the renamed hook functions, the caller's tokenizer."""

import json
import warnings
from dataclasses import asdict

import pytest
import torch

import stv
from stv.cli.common import stv_config_from_args
from stv.cli.parser import build_parser
from stv.config import STVConfig

from .conftest import text_examples


def test_the_default_config_is_what_stv_fit_uses():
    args = build_parser().parse_args(["fit", "--dataset", "fv:capitalize", "--out", "x"])
    assert asdict(STVConfig()) == asdict(stv_config_from_args(args)) == asdict(STVConfig.fast())
    assert STVConfig().variant == "fast" and STVConfig.paper() != STVConfig()


def test_settings_that_cannot_work_fail_on_construction_and_name_the_field():
    with pytest.raises(stv.StvError, match="refine_lr"):
        STVConfig(refine_lr=float("nan"))
    with pytest.raises(stv.StvError, match="policy"):
        STVConfig(policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(stv.StvError, match="unknown STV variant 'best'"):
        STVConfig.preset("best")
    assert STVConfig.plus(steps=40).continuation_search == 40  # a linked preset value follows the run's steps


def _words(model, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits[0, -1]


def test_fit_returns_vectors_that_apply_to_a_plain_model_and_attach_until_removed(lmm_of):

    lmm = lmm_of("llama")
    vectors = stv.fit(lmm, text_examples(24), STVConfig(refine=4, refine_lr=0.5), progress=False)
    assert isinstance(vectors, stv.TaskVectors) and vectors.log is not None  # the log rides on the artifact
    model, tokenizer = lmm.model, lmm.tokenizer  # what a user holds: a transformers model and its tokenizer
    plain = _words(model, tokenizer, "Q: apple\nA:")
    with vectors.apply(model):
        written = _words(model, tokenizer, "Q: apple\nA:")
    assert not torch.allclose(plain, written)
    assert torch.allclose(_words(model, tokenizer, "Q: apple\nA:"), plain)  # the block ended: nothing written
    vectors.attach(model)
    assert torch.allclose(_words(model, tokenizer, "Q: apple\nA:"), written)
    vectors.remove()
    assert torch.allclose(_words(model, tokenizer, "Q: apple\nA:"), plain)
    vectors.remove()  # nothing attached: no-op


class _RecordingHub:
    """Stands in for huggingface_hub.HfApi (the network): keeps what would be uploaded."""

    def __init__(self, into):
        self.into, self.repos = into, []

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.repos.append(repo_id)

    def upload_folder(self, repo_id, folder_path, commit_message):
        import shutil

        shutil.copytree(folder_path, self.into)
        return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()


def _hub_cache(root, repo_id: str, files) -> None:
    """A Hugging Face cache holding ``files`` as repo ``repo_id``'s main revision."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in files:
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def test_push_to_hub_writes_a_model_card_and_a_repo_id_loads_offline(lmm_of, tmp_path, monkeypatch):

    from huggingface_hub import constants

    lmm = lmm_of("llama")
    vectors = stv.fit(lmm, text_examples(24), STVConfig(refine=2), progress=False)
    hub = _RecordingHub(tmp_path / "uploaded")
    url = vectors.push_to_hub("someone/capitalize-vectors", api=hub)
    assert url.endswith("/commit/1") and hub.repos == ["someone/capitalize-vectors"]
    card = (tmp_path / "uploaded" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: stv") and 'from_pretrained("someone/capitalize-vectors")' in card
    assert json.loads(card.split("```json\n")[1].split("```")[0])["refine"] == 2  # the settings, as fitted
    uploaded = stv.TaskVectors.from_pretrained(tmp_path / "uploaded")
    assert torch.equal(uploaded.vectors.nan_to_num(), vectors.vectors.nan_to_num())

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    _hub_cache(tmp_path / "cache", "someone/capitalize-vectors", list((tmp_path / "uploaded").iterdir()))
    loaded = stv.TaskVectors.from_pretrained("someone/capitalize-vectors")  # offline: from the cache
    assert loaded.fingerprint() == vectors.fingerprint()
    assert stv.load_fitted("someone/capitalize-vectors").fingerprint() == vectors.fingerprint()  # `stv eval --vectors`
    with pytest.raises(FileNotFoundError, match="no hub repo of that id"):
        stv.TaskVectors.from_pretrained("someone/not-there")


def test_a_pushed_lora_adapters_card_loads_it_as_an_adapter(lmm_of, tmp_path):
    lmm = lmm_of("llama")
    adapter = stv.fit_lora(lmm, text_examples(24), stv.LoRAConfig(steps=2), progress=False)
    adapter.push_to_hub("someone/capitalize-lora", api=_RecordingHub(tmp_path / "uploaded"))
    card = (tmp_path / "uploaded" / "README.md").read_text()
    assert 'stv.LoRAAdapter.from_pretrained("someone/capitalize-lora")' in card and "# lora LoRA adapter" in card
    assert stv.LoRAAdapter.from_pretrained(tmp_path / "uploaded").fingerprint() == adapter.fingerprint()


def test_the_renamed_hook_functions_keep_their_old_names_for_a_release():
    with pytest.warns(DeprecationWarning, match="stv.write_heads"):
        old = stv.replace
    assert old is stv.write_heads
    with pytest.warns(DeprecationWarning, match="record_heads"):
        from stv.hooks.heads import record  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stv.record_heads is not None  # the new names do not warn


def test_preparing_a_batch_leaves_the_callers_tokenizer_as_it_was(lmm_of):
    lmm = lmm_of("llama")
    tokenizer = lmm.tokenizer
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side, tokenizer.pad_token = "right", None
    try:
        inputs = lmm.prepare([["a b c d e"], ["a"]])
        assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][1, -1] == 1  # padded on the left
        assert (tokenizer.padding_side, tokenizer.pad_token) == ("right", None)
    finally:
        tokenizer.padding_side, tokenizer.pad_token = side, pad
