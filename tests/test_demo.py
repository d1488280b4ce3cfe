"""The quick demo end to end on the shipped lab model: files, keys and the headline effect."""

import json

from stv.demo import METHODS, DemoConfig, run_demo


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
    heads = 16  # the lab model: 4 layers x 4 heads
    assert summary["top_k"] == {"stv": 8, "stv_relative": 8, "stv_mean_delta": 8, "stv+": heads}  # each its own K
    m = summary["methods"]
    # zero-shot cannot know the answer vocabulary; STV's vectors carry it, as 16-shot ICL does
    assert m["zero_shot"]["parity_word"][0] < 10
    assert m["stv"]["parity_word"][0] > 80 and m["icl_16"]["parity_word"][0] > 90
