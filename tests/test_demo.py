"""The quick demo end to end on the shipped lab model: files, keys, the headline effect, and
resuming a folder unit by unit."""

import json
from dataclasses import replace

import pytest

from stv.errors import SettingsMismatchError, StvError
from stv.experiments.demo import METHODS, DemoConfig, run_demo


@pytest.mark.slow
def test_quick_demo_writes_results_and_stv_recovers_a_format_task(tmp_path):
    summary = run_demo(tmp_path, DemoConfig.quick(), progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["methods"]) == set(METHODS)
    for method in METHODS:
        assert set(results["methods"][method]) == {"parity_word", "parity_AB"}
        per_seed = results["methods"][method]["parity_word"]
        n = DemoConfig.quick().test_per_task
        assert len(per_seed) == 1 and abs(per_seed[0] * n / 100 - round(per_seed[0] * n / 100)) < 1e-6  # k of n
    for name in ("report.md", "accuracy.png", "sensitivity_parity_word.png", "reinforce_parity_AB.png"):
        assert (tmp_path / name).is_file(), name
    assert f"Reproduce with `stv demo --quick --out {tmp_path}`" in (tmp_path / "report.md").read_text()
    assert results["units"] == [2, 2] and not results["partial"]
    assert json.loads((tmp_path / "settings.json").read_text())["model"] == "lab"  # not this checkout's path
    assert (tmp_path / "vectors" / "parity_AB.seed0" / "task_vectors.safetensors").is_file()
    heads = 16  # the lab model: 4 layers x 4 heads
    assert summary["top_k"] == {"stv": 8, "stv_forward": heads, "stv_fast": heads}  # each its own K
    fits = json.loads((tmp_path / "units" / "parity_AB.seed0.json").read_text())["fits"]
    assert set(fits) == {"stv_forward", "stv_fast"}  # what each variant's fit chose
    assert fits["stv_fast"]["refine"]["start"] == "zero" and "arms" in fits["stv_forward"]
    # every fitted method has its cost: LoRA and the fast preset take a backward pass, MTV and forward do not
    costs = results["costs"]
    assert {m: costs[m]["backward"] for m in ("mtv", "lora", "stv", "stv_forward", "stv_fast")} == {
        "mtv": False,
        "lora": True,
        "stv": False,
        "stv_forward": False,
        "stv_fast": True,
    }
    assert costs["lora"]["used"] > costs["stv_fast"]["used"] > 0 and all(
        c["fit_s"] > 0 for c in costs.values() if "fit_s" in c
    )
    assert "| fit s | peak MB | backward | numbers used | eval s |" in (tmp_path / "report.md").read_text()
    m = summary["methods"]
    # zero-shot cannot know the answer vocabulary; STV's vectors carry it, as 16-shot ICL does
    assert m["zero_shot"]["parity_word"][0] < 10
    assert m["stv"]["parity_word"][0] > 80 and m["icl_16"]["parity_word"][0] > 90

    # a rerun reads the finished units back instead of computing them again
    unit = tmp_path / "units" / "parity_word.seed0.json"
    stored = json.loads(unit.read_text())
    stored["scores"]["mtv"] = [12.34]  # a value no run computes: 100 test queries give whole numbers
    unit.write_text(json.dumps(stored))
    again = run_demo(tmp_path, DemoConfig.quick(), progress=False)
    assert again["methods"]["mtv"]["parity_word"] == [12.34]
    assert again["methods"]["stv"] == summary["methods"]["stv"]
    # other settings are refused before anything is computed, and the folder is left as it was
    with pytest.raises(SettingsMismatchError, match="test_per_task"):
        run_demo(tmp_path, replace(DemoConfig.quick(), test_per_task=50), progress=False)
    assert json.loads(unit.read_text())["scores"]["mtv"] == [12.34]


def tiny_demo() -> DemoConfig:
    """The quick demo cut to one task, 20 queries and a few steps of every fit."""
    quick = DemoConfig.quick()
    return replace(
        quick,
        tasks=("parity_word",),
        test_per_task=20,
        icl_shots=(1,),
        variants=(),
        stv=replace(quick.stv, pairs=10, steps=5, samples=4),
        mtv=replace(quick.mtv, prompts=10, steps=5, samples=4),
        lora=replace(quick.lora, steps=5),
    )


@pytest.mark.slow
def test_demo_seeds_run_apart_then_merge_and_recompute_clears(tmp_path):
    tiny = tiny_demo()
    run_demo(tmp_path, replace(tiny, seeds=(1,)), progress=False)
    (tmp_path / "units" / "stale.seed0.json").write_text("{}")  # in stv's units folder: --recompute clears it
    (tmp_path / "notes.md").write_text("mine")  # the user's own file: never touched
    run_demo(tmp_path, replace(tiny, seeds=(1,)), progress=False, recompute=True)
    assert not (tmp_path / "units" / "stale.seed0.json").exists()
    assert (tmp_path / "notes.md").read_text() == "mine"
    with pytest.raises(StvError, match="no finished"):  # report-only with none of its seeds: nothing written
        run_demo(tmp_path, replace(tiny, seeds=(0,)), progress=False, report_only=True)
    run_demo(tmp_path, replace(tiny, seeds=(0,)), progress=False)  # another process, the same folder
    seed0 = json.loads((tmp_path / "units" / "parity_word.seed0.json").read_text())
    seed1 = json.loads((tmp_path / "units" / "parity_word.seed1.json").read_text())
    three = run_demo(tmp_path, replace(tiny, seeds=(0, 1, 2)), progress=False, report_only=True)  # no model
    assert three["units"] == [2, 3] and three["partial"] and three["model"] == "lab"
    assert "partial: 2 of 3" in (tmp_path / "report.md").read_text()
    merged = run_demo(tmp_path, replace(tiny, seeds=(0, 1)), progress=False)  # computes nothing
    for method in tiny.methods():
        assert merged["methods"][method]["parity_word"] == [seed0["scores"][method][0], seed1["scores"][method][0]]
    assert merged["unit_seconds"] == round(seed0["wall_s"] + seed1["wall_s"], 1)
    assert "partial" not in (tmp_path / "report.md").read_text()


def test_a_folder_fitted_under_another_definition_of_a_variant_is_refused(tmp_path, monkeypatch):
    """Settings hold each variant's whole STVConfig, not only its name: when a variant's
    definition changes, a folder of units fitted under the old one is refused before anything
    loads, not resumed."""
    from stv.experiments import variants
    from stv.experiments.demo import DEMO_OUTPUTS, demo_settings
    from stv.runs.fingerprint import prepare_folder

    config = DemoConfig.quick()
    loaded = {**demo_settings(None, config), "model": "lab", "weights": "params-sha256:0"}  # as a run records them
    prepare_folder(tmp_path, loaded, False, "demo results", DEMO_OUTPUTS)
    prepare_folder(tmp_path, demo_settings(None, config), False, "demo results", DEMO_OUTPUTS)  # same: resumes
    monkeypatch.setitem(variants.VARIANTS, "fast", variants.Variant("fast", {"steps": 0, "refine_start": "search"}))
    with pytest.raises(SettingsMismatchError, match=r"variants\.fast\.refine_start"):
        prepare_folder(tmp_path, demo_settings(None, config), False, "demo results", DEMO_OUTPUTS)


@pytest.mark.slow
def test_units_in_worker_processes_equal_units_in_this_one(tmp_path):
    """``jobs`` 2 runs the (task, seed) units in two processes: the same scores, unit by unit."""
    tiny = replace(tiny_demo(), seeds=(0, 1), variants=("fast",))
    apart = run_demo(tmp_path / "apart", tiny, progress=False, jobs=2)
    together = run_demo(tmp_path / "together", tiny, progress=False, jobs=1)
    assert apart["units"] == together["units"] == [2, 2] and apart["methods"] == together["methods"]
    for seed in (0, 1):
        one, two = (
            json.loads((tmp_path / k / "units" / f"parity_word.seed{seed}.json").read_text())
            for k in ("apart", "together")
        )
        assert one["scores"] == two["scores"]
