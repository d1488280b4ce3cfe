"""Generation-based evaluation (resumable predictions + scores) and `stv score`."""

import json

import pytest

from stv.cli.main import main
from stv.data import digit_examples
from stv.evaluate import run_eval
from stv.experiments.lab import load_lab
from stv.tasks import DIGITS

from .conftest import TINY_STV_FLAGS


@pytest.fixture(scope="module")
def lab():
    return load_lab()


def test_run_eval_writes_scores_and_resumes(tmp_path, lab):
    test, pool = digit_examples("size_word", "test")[:12], digit_examples("size_word", "train")
    scores = run_eval(lab, test, DIGITS, tmp_path, pool, shots=8, batch_size=4, max_new_tokens=2, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [e.id for e in test]
    assert scores["accuracy"] > 80  # 8-shot ICL on a format task
    # simulate a kill after 5 answers and a half-written line: the rerun only redoes the rest
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]) + '{"question_')
    calls = []
    original = lab.generate_ids
    lab.generate_ids = lambda prompts, **kw: calls.append(len(prompts)) or original(prompts, **kw)
    try:
        again = run_eval(lab, test, DIGITS, tmp_path, pool, shots=8, batch_size=4, max_new_tokens=2, progress=False)
    finally:
        del lab.generate_ids
    assert sum(calls) == 7 and again["accuracy"] == scores["accuracy"]
    assert json.loads((tmp_path / "scores.json").read_text())["n"] == 12


def test_score_cli_vqa_vizwiz_choice(tmp_path, capsys):
    ann = {
        "annotations": [
            {"question_id": 1, "answer_type": "number", "answers": [{"answer": "2"}] * 10},
            {"question_id": 2, "answer_type": "other", "answers": [{"answer": "red"}] * 10},
        ]
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    (tmp_path / "pred.jsonl").write_text('{"question_id": 1, "answer": "two"}\n{"question_id": 2, "answer": "blue"}\n')
    assert (
        main(
            [
                "score",
                "--metric",
                "vqa",
                "--predictions",
                str(tmp_path / "pred.jsonl"),
                "--annotations",
                str(tmp_path / "ann.json"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == 50.0 and out["by_answer_type"] == {"number": 100.0, "other": 0.0}
    viz = [{"image": "a.jpg", "answerable": 1, "answers": [{"answer": "dog"}] * 10}]
    (tmp_path / "viz.json").write_text(json.dumps(viz))
    (tmp_path / "vpred.json").write_text(json.dumps([{"image": "a.jpg", "answer": "Dog."}]))
    assert (
        main(
            [
                "score",
                "--metric",
                "vizwiz",
                "--predictions",
                str(tmp_path / "vpred.json"),
                "--annotations",
                str(tmp_path / "viz.json"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["accuracy"] == 100.0
    (tmp_path / "choice.jsonl").write_text('{"question_id": 1, "answer": "A"}\n')
    (tmp_path / "cpred.jsonl").write_text('{"question_id": 1, "answer": " A "}\n')
    assert (
        main(
            [
                "score",
                "--metric",
                "choice",
                "--predictions",
                str(tmp_path / "cpred.jsonl"),
                "--annotations",
                str(tmp_path / "choice.jsonl"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["accuracy"] == 100.0


@pytest.mark.slow
def test_cli_fit_and_eval_on_a_vizwiz_fixture(tmp_path, family_dir, capsys):
    """Plumbing on real dataset files: VizWiz layout, tiny Qwen2-VL, generation + official metric."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "vizwiz"
    (root / "val").mkdir(parents=True)
    records = []
    for i in range(8):
        name = f"VizWiz_val_{i:08d}.jpg"
        Image.fromarray(np.full((32, 32, 3), 30 * i, dtype=np.uint8)).save(root / "val" / name)
        records.append(
            {
                "image": name,
                "question": "What color is it?",
                "answerable": int(i % 4 != 0),
                "answer_type": "other",
                "answers": [{"answer": "red", "answer_confidence": "yes"}] * 10,
            }
        )
    (root / "val.json").write_text(json.dumps(records))
    model = family_dir("qwen2_vl")
    common = ["--model", model, "--dataset", "vizwiz", "--root", str(root), "--train-split", "val"]
    assert main(["fit", *common, "--out", str(tmp_path / "tv"), *TINY_STV_FLAGS]) == 0
    assert (
        main(
            [
                "eval",
                *common,
                "--split",
                "val",
                "--vectors",
                str(tmp_path / "tv"),
                "--shots",
                "1",
                "--out",
                str(tmp_path / "ev"),
                "--max-new-tokens",
                "3",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert line["metric"] == "vizwiz" and line["n"] == 8 and line["accuracy"] == round(scores["accuracy"], 2)
    assert "answerability" in scores and scores["by_answer_type"].keys() == {"other"}
    assert len((tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()) == 8
