"""The four ways a rerun used to report a number computed under other settings, now each a
right number or a clear refusal (on the shipped lab model, so the numbers are real)."""

import json

import numpy as np
import pytest

from stv.cli.main import main

EVAL = ["eval", "--dataset", "digits:parity_AB", "--max-new-tokens", "2"]
FIT = [
    "fit",
    "--dataset",
    "digits:parity_word",
    "--top-k",
    "2",
    "--clusters",
    "2",
    "--pairs",
    "8",
    "--context-shots",
    "4",
    "--steps",
    "2",
    "--samples",
    "4",
]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_refuses_other_settings_in_the_same_folder(tmp_path, capsys):
    out = ["--out", str(tmp_path / "ev"), "--limit", "12"]
    assert main([*EVAL, *out]) == 0
    zero = _last_json(capsys)["accuracy"]
    assert main([*EVAL, *out, "--shots", "16"]) == 2
    assert "shots: 0 -> 16" in capsys.readouterr().err
    assert main([*EVAL, *out, "--shots", "16", "--recompute"]) == 0
    sixteen = _last_json(capsys)["accuracy"]
    assert main([*EVAL, "--out", str(tmp_path / "fresh"), "--limit", "12", "--shots", "16"]) == 0
    assert _last_json(capsys)["accuracy"] == sixteen != zero


def test_default_eval_folders_differ_by_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*EVAL, "--limit", "4"]) == 0
    first = _last_json(capsys)["out"]
    assert main([*EVAL, "--limit", "4", "--shots", "2"]) == 0
    second = _last_json(capsys)["out"]
    assert first != second and "shots0" in first and "shots2" in second


def test_smaller_limit_keeps_earlier_predictions(tmp_path, capsys):
    out = ["--out", str(tmp_path / "ev"), "--shots", "4"]
    assert main([*EVAL, *out, "--limit", "10"]) == 0
    ten = _last_json(capsys)
    assert main([*EVAL, *out, "--limit", "3"]) == 0
    three = _last_json(capsys)
    rows = (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 10 and three["n"] == 3
    assert json.loads((tmp_path / "ev" / "scores-limit10.json").read_text())["accuracy"] == ten["accuracy"]
    assert json.loads((tmp_path / "ev" / "scores-limit3.json").read_text())["n"] == 3


def test_fit_folder_refuses_other_settings_and_recompute_replaces_everything(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")]
    assert main([*FIT, *out]) == 0
    assert main([*FIT, *out]) == 0 and "already holds" in capsys.readouterr().out
    assert main([*FIT, *out, "--steps", "3"]) == 2
    err = capsys.readouterr().err  # stv+'s continuation search takes --steps too
    assert "other settings (" in err and "config.steps: 2 -> 3)" in err
    assert main([*FIT, *out, "--method", "mtv", "--recompute"]) == 0
    folder = tmp_path / "run"
    assert not (folder / "scan").exists() and not (folder / "sensitivity.png").exists()
    assert json.loads((folder / "task_vectors.json").read_text())["method"] == "mtv"
    assert json.loads((folder / "settings.json").read_text())["method"] == "mtv"


@pytest.mark.slow
def test_killed_recompute_never_leaves_a_trusted_scan(tmp_path, capsys, monkeypatch):
    from stv.methods import scan as scan_module

    out = ["--out", str(tmp_path / "run")]
    assert main([*FIT, *out]) == 0
    reference = json.loads((tmp_path / "run" / "scan" / "scan.json").read_text())["sensitivity"]
    calls = []
    real = scan_module.record_prompts

    def killed_after_one_batch(lmm, prompts):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(lmm, prompts)

    monkeypatch.setattr(scan_module, "record_prompts", killed_after_one_batch)
    assert main([*FIT, *out, "--recompute", "--batch-size", "4"]) == 130  # Ctrl-C: one line, the folder kept
    scan_dir = tmp_path / "run" / "scan"
    # the old marker went first and the half-written activations never got the trusted name
    assert not (scan_dir / "scan.json").exists() and not (scan_dir / "context_activations.npy").exists()
    monkeypatch.setattr(scan_module, "record_prompts", real)
    assert main([*FIT, *out, "--batch-size", "4"]) == 0
    log = json.loads((tmp_path / "run" / "fit_log.json").read_text())
    assert log["scan_reused"] is False
    again = json.loads((scan_dir / "scan.json").read_text())["sensitivity"]
    assert np.allclose(again, reference, atol=1e-4)


def test_a_model_folder_moved_elsewhere_resumes_and_a_renamed_one_is_named(tmp_path, capsys):
    """Settings name a local checkpoint by its folder's name, not its path: the same weights
    in another place resume; the bundled lab checkpoint is "lab" wherever this checkout is."""
    import shutil

    from stv.experiments.lab import LAB_CHECKPOINT

    for place in ("a", "b"):
        shutil.copytree(LAB_CHECKPOINT, tmp_path / place / "mylab")
    out = ["--out", str(tmp_path / "ev"), "--limit", "4"]
    assert main([*EVAL, *out, "--model", str(tmp_path / "a" / "mylab")]) == 0
    first = _last_json(capsys)["accuracy"]
    assert main([*EVAL, *out, "--model", str(tmp_path / "b" / "mylab")]) == 0
    assert _last_json(capsys)["accuracy"] == first
    assert json.loads((tmp_path / "ev" / "settings.json").read_text())["model"] == "mylab"
    shutil.move(tmp_path / "b" / "mylab", tmp_path / "b" / "renamed")
    assert main([*EVAL, *out, "--model", str(tmp_path / "b" / "renamed")]) == 2
    assert "model: " in capsys.readouterr().err
    assert main([*EVAL, "--out", str(tmp_path / "lab"), "--limit", "4"]) == 0
    assert json.loads((tmp_path / "lab" / "settings.json").read_text())["model"] == "lab"
