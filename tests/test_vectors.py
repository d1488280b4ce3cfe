"""TaskVectorsConfig: what an artifact records, typed, and its flat JSON form."""

from dataclasses import asdict

import stv
from stv.config import STVConfig
from stv.data import load_dataset
from stv.fingerprint import data_fingerprint
from stv.tasks import task_for
from stv.vectors import TaskVectorsConfig


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
