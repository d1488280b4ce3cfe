"""LoRA (peft) as a method: it learns a task on the text decoder alone, leaves the model as it
found it, saves a folder peft itself reads, and goes through `stv fit` / `stv eval` like vectors."""

import json

import numpy as np
import pytest
import torch

from stv.cli.main import main
from stv.errors import StvError
from stv.evaluate import generation_accuracy
from stv.methods.lora import LoRAAdapter, LoRAConfig, fit_lora, load_fitted, target_modules
from stv.tasks import task_for
from stv.vectors import ArtifactError, ArtifactMismatchError

from .test_refine import constant_answer_examples


@pytest.mark.parametrize("family", ["llama", "idefics2"])
def test_lora_learns_the_answer_and_leaves_the_model_as_it_was(lmm_of, family, tmp_path):
    lmm = lmm_of(family)
    train, test = constant_answer_examples(64), constant_answer_examples(80)[64:]
    task = task_for(train)
    before = {k: v.clone() for k, v in lmm.model.state_dict().items()}
    adapter = fit_lora(lmm, train, LoRAConfig(steps=30, lr=1e-2), task, progress=False)
    timings = adapter.log
    after = lmm.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert generation_accuracy(lmm, test, task, train, 0, None, max_new_tokens=4) == (0.0, 0.0)
    assert generation_accuracy(lmm, test, task, train, 0, adapter, max_new_tokens=4) == (100.0, 100.0)
    assert set(lmm.model.state_dict()) == set(before)  # removed again after the block
    # adapters sit in the text decoder's attention only (a vision tower is never touched)
    targets = target_modules(lmm)
    assert len(targets) == 4 * lmm.heads.num_layers
    assert all("vision" not in name for name in targets)
    assert {name.rpartition(".")[0] for name in adapter.tensors} <= {
        f"base_model.model.{t}.lora_{ab}" for t in targets for ab in "AB"
    }
    adapter.save_pretrained(tmp_path / "a")
    again = LoRAAdapter.from_pretrained(tmp_path / "a")
    assert again.fingerprint() == adapter.fingerprint() and timings["train"] > 0
    assert generation_accuracy(lmm, test, task, train, 0, again, max_new_tokens=4) == (100.0, 100.0)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft itself reads it
def test_the_folder_is_peft_s_own_format(lmm_of, tmp_path):
    from peft import PeftModel

    lmm = lmm_of("llama")
    train = constant_answer_examples(16)
    adapter = fit_lora(lmm, train, LoRAConfig(steps=2), task_for(train), progress=False)
    adapter.save_pretrained(tmp_path / "a")
    peft_model = PeftModel.from_pretrained(lmm.model, str(tmp_path / "a"))
    loaded = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(adapter.tensors)
    assert all(torch.equal(loaded[k.replace(".weight", ".default.weight")], v) for k, v in adapter.tensors.items())
    peft_model.unload()


def test_same_seed_same_adapter_other_seed_other(lmm_of):
    lmm = lmm_of("llama")
    train = constant_answer_examples(32)
    task = task_for(train)
    a, b, c = (fit_lora(lmm, train, LoRAConfig(steps=3, seed=s), task, progress=False) for s in (0, 0, 1))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": float("nan")}, "lr=nan"),
        ({"r": 0}, "r=0"),
        ({"steps": 0}, "steps=0"),
        ({"targets": ("c_attn",)}, "targets"),
    ],
)
def test_bad_settings_are_refused(change, message):
    with pytest.raises(StvError, match=message):
        LoRAConfig(**change).check()


def test_damaged_or_foreign_adapters_are_refused(lmm_of, tmp_path):
    lmm, other = lmm_of("llama"), lmm_of("qwen2")
    train = constant_answer_examples(16)
    adapter = fit_lora(lmm, train, LoRAConfig(steps=1), task_for(train), progress=False)
    adapter.save_pretrained(tmp_path / "a")
    with pytest.raises(ArtifactMismatchError):
        with adapter.apply(other):
            pass
    weights = tmp_path / "a" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="cannot be read"):
        load_fitted(tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").unlink()
    with pytest.raises(ArtifactError, match="adapter_config.json is missing"):
        load_fitted(tmp_path / "a")


def test_cli_fit_lora_then_eval_its_folder(tmp_path, family_dir, capsys):
    model = family_dir("llama")
    rows = [{"input": f"w{i}", "output": "yes"} for i in range(40)]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    data = ["--model", model, "--dataset", f"fv:{tmp_path / 't.json'}"]
    out = tmp_path / "fit"
    assert main(["fit", *data, "--method", "lora", "--lora-steps", "20", "--lora-lr", "0.01", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == "lora" and summary["backward"] and summary["stored"] == summary["used"] > 0
    assert {"adapter_model.safetensors", "adapter_config.json", "stv_adapter.json", "fit_log.json"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "fit_log.json").read_text())["costs"]["peak_mb"] > 0
    assert main(["fit", *data, "--method", "lora", "--lora-steps", "20", "--lora-lr", "0.01", "--out", str(out)]) == 0
    assert "already holds a fit" in capsys.readouterr().out  # the same settings resume: nothing refitted
    ev = ["eval", *data, "--vectors", str(out), "--split", "train", "--limit", "4", "--out", str(tmp_path / "ev")]
    assert main(ev) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["accuracy"] == 100.0


def test_cli_refuses_bad_lora_flags_before_loading(tmp_path, capsys):
    code = main(
        ["fit", "--model", str(tmp_path / "absent"), "--dataset", "fv:capitalize", "--method", "lora"]
        + ["--lora-lr", "-1", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "lr=-1.0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fast_preset_fits_without_a_scan(lmm_of, tmp_path):
    from stv.config import STVConfig
    from stv.methods.fit import fit

    lmm = lmm_of("llama")
    train = constant_answer_examples(96)
    vectors = fit(lmm, train, STVConfig.fast(refine=20, refine_lr=0.5), progress=False, workdir=tmp_path / "scan")
    log = vectors.log
    assert log.scan_result is None and not (tmp_path / "scan").exists()
    assert len(vectors.locations) == lmm.heads.num_layers * lmm.heads.num_heads
    assert set(log.timings) == {"refine"} and np.isfinite(vectors.shifts.numpy()).all()
    test = constant_answer_examples(120)[96:]
    assert generation_accuracy(lmm, test, task_for(train), train, 0, vectors, max_new_tokens=2)[0] == 100.0


def test_artifacts_apply_to_a_plain_transformers_model(lmm_of, family_dir):
    """Fitted on stv's LMM, applied to the same checkpoint loaded by transformers alone: its own
    generate() answers with them, and without them after the block."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stv.config import STVConfig
    from stv.methods.fit import fit

    lmm = lmm_of("llama")
    train = constant_answer_examples(96)
    vectors = fit(lmm, train, STVConfig.fast(refine=20, refine_lr=0.5), progress=False)
    adapter = fit_lora(lmm, train, LoRAConfig(steps=30, lr=1e-2), task_for(train), progress=False)
    model = AutoModelForCausalLM.from_pretrained(family_dir("llama"))
    tokenizer = AutoTokenizer.from_pretrained(family_dir("llama"))
    text = "".join(p for p in task_for(train).prompt([], constant_answer_examples(120)[100]) if isinstance(p, str))
    inputs = tokenizer([text], return_tensors="pt")
    target = tokenizer(" yes", add_special_tokens=False).input_ids[0]

    def first_token() -> int:
        return int(model.generate(**inputs, max_new_tokens=1, do_sample=False)[0, -1])

    plain = first_token()
    for artifact in (vectors, adapter):
        with artifact.apply(model):
            assert first_token() == target
        assert first_token() == plain != target
