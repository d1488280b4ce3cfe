"""TaskVectors and TaskVectorsConfig: what an artifact records, its round trip, and the refusal of a
model it was not fitted for."""

from dataclasses import asdict

import pytest
import torch

import stv
from stv.config import STVConfig
from stv.data import digit_examples, load_dataset
from stv.errors import StvError
from stv.runs.fingerprint import data_fingerprint
from stv.tasks import DIGITS, task_for
from stv.vectors import ArtifactMismatchError, TaskVectors, TaskVectorsConfig


def test_config_for_a_fit_names_model_data_and_settings(lmm_of):
    lmm = lmm_of("llama")
    train = load_dataset("fv:capitalize", split="train")[:12]
    cfg = STVConfig.plus(top_k=2)
    typed = TaskVectorsConfig.for_fit(lmm, "stv", cfg, task_for(train), train)
    assert (typed.num_layers, typed.num_heads, typed.architecture) == (
        lmm.heads.num_layers,
        lmm.heads.num_heads,
        "LlamaForCausalLM",
    )
    assert typed.weights == lmm.weights_fingerprint() and typed.data_fingerprint == data_fingerprint(train)
    assert typed.policy == "prompt_last" and typed.hyperparameters == asdict(cfg) and typed.train_examples == 12
    assert typed.stv_version == stv.__version__


def test_flat_json_keeps_extra_keys_and_round_trips():
    typed = TaskVectorsConfig(
        method="mtv", model="m", num_heads=4, extra={"variant": "stv+", "continuation": {"steps": 2}}
    )
    flat = typed.to_dict()
    assert flat["variant"] == "stv+" and "extra" not in flat and flat["method"] == "mtv"
    assert TaskVectorsConfig.from_dict(flat) == typed
    assert TaskVectorsConfig.from_dict({"policy": "prompt_last"}).policy == "prompt_last"  # older, partial files


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


def test_shifts_round_trip_and_change_the_fingerprint(tmp_path, lmm_of):
    lmm = lmm_of("llava")
    vectors = torch.randn(2, lmm.heads.head_dim)
    vectors[1] = float("nan")  # the second head keeps its own output, moved by its shift
    steered = TaskVectors(torch.tensor([[0, 1], [1, 2]]), vectors, shifts=torch.randn(2, lmm.heads.head_dim))
    loaded = TaskVectors.from_pretrained(steered.save_pretrained(tmp_path / "tv"))
    assert loaded.shifts is not None
    torch.testing.assert_close(loaded.shifts, steered.shifts)
    plain = TaskVectors(steered.locations, steered.vectors)
    assert plain.fingerprint() != loaded.fingerprint() == steered.fingerprint()
    p = [DIGITS.prompt([], digit_examples("digit")[0])]
    with plain.apply(lmm):
        unshifted = lmm.forward(p)
    with loaded.apply(lmm):
        assert (lmm.forward(p) - unshifted).abs().max() > 1e-4
    with pytest.raises(StvError, match="shifts"):
        TaskVectors(steered.locations, vectors, shifts=torch.randn(1, lmm.heads.head_dim))
