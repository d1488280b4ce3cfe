"""The quick demo end to end on the shipped lab model: files, keys and the headline effect."""

import json

from stv.demo import METHODS, DemoConfig, run_demo


def test_quick_demo_writes_results_and_stv_recovers_a_format_task(tmp_path):
    summary = run_demo(tmp_path, DemoConfig.quick(), progress=False)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["methods"]) == set(METHODS)
    for method in METHODS:
        assert set(results["methods"][method]) == {"parity_word", "parity_AB"}
        assert all(0 <= a <= 100 for a in results["methods"][method]["parity_word"])
    for name in ("report.md", "accuracy.png", "sensitivity_parity_word.png", "policy_parity_AB.png"):
        assert (tmp_path / name).is_file(), name
    m = summary["methods"]
    # zero-shot cannot know the answer vocabulary; STV's vectors carry it, as 16-shot ICL does
    assert m["zero_shot"]["parity_word"][0] < 10
    assert m["stv"]["parity_word"][0] > 80 and m["icl_16"]["parity_word"][0] > 90
