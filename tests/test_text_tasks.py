"""Function Vectors text tasks: loading, the fixed split, templates, exact match, eval."""

import json

import pytest

from stv.data import DataError, load_dataset
from stv.data.function_vectors import bundled_tasks, in_train
from stv.metrics import exact_match
from stv.tasks import TASKS, task_for, text_task


def test_bundled_task_split_is_fixed_disjoint_and_about_70_30():
    assert {"capitalize", "present-past", "choose_first_of_5"} <= set(bundled_tasks())
    train, test = load_dataset("fv:capitalize", split="train"), load_dataset("fv:capitalize", split="test")
    every = load_dataset("fv:capitalize", split="all")
    assert len(train) + len(test) == len(every) == 813
    assert 0.64 < len(train) / len(every) < 0.76
    assert not {e.question for e in train} & {e.question for e in test}
    assert [e.id for e in load_dataset("fv:capitalize", split="train")] == [e.id for e in train]
    assert all(in_train(e.question) for e in train) and not any(in_train(e.question) for e in test)
    assert train[0].answers and train[0].metadata["dataset"] == "fv:capitalize"


def test_fv_paths_roots_and_bad_files(tmp_path):
    (tmp_path / "abstractive").mkdir()
    records = [{"input": f"w{i}", "output": f"W{i}"} for i in range(30)]
    (tmp_path / "abstractive" / "mine.json").write_text(json.dumps(records))
    by_root = load_dataset("fv:mine", root=tmp_path, split="all")
    by_file = load_dataset(f"fv:{tmp_path / 'abstractive' / 'mine.json'}", split="all")
    assert [e.answer for e in by_root] == [e.answer for e in by_file] == [r["output"] for r in records]
    with pytest.raises(DataError, match="bundled tasks are"):
        load_dataset("fv:nope", split="train")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"input": "a", "output": "b"},\n {"input": }]')
    with pytest.raises(DataError, match=r"bad.json is not valid JSON \(line 2"):
        load_dataset(f"fv:{bad}")
    bad.write_text('[{"input": "a"}]')
    with pytest.raises(DataError, match="record 0"):
        load_dataset(f"fv:{bad}", split="all")
    bad.write_text("[]")
    with pytest.raises(DataError, match="non-empty"):
        load_dataset(f"fv:{bad}")
    with pytest.raises(DataError, match="split 'val'"):
        load_dataset("fv:capitalize", split="val")


def test_text_template_prompt_and_first_token_continuation():
    task = task_for("fv:capitalize")
    assert task is TASKS["fv"]
    demos, query = load_dataset("fv:capitalize", split="train")[:2], load_dataset("fv:capitalize", split="test")[0]
    text = "".join(task.prompt(demos, query))
    assert text == (
        f"Q: {demos[0].question}\nA: {demos[0].answer}\n\nQ: {demos[1].question}\nA: {demos[1].answer}"
        f"\n\nQ: {query.question}\nA:"
    )
    assert task.continuation(query) == " " + query.answer
    custom = text_task("Input: {input} Output: {output}", separator="\n")
    assert "".join(custom.prompt(demos[:1], query)) == (
        f"Input: {demos[0].question} Output: {demos[0].answer}\nInput: {query.question} Output:"
    )
    with pytest.raises(ValueError, match="end with"):
        text_task("{output} is {input}")


def test_task_for_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="no prompt template for dataset 'mystery'"):
        task_for("mystery")
    assert task_for("cub").name == "choice" and task_for("hf:okvqa") is TASKS["okvqa"]


def test_exact_match_strict_and_normalised():
    preds, answers = {"1": " Paris ", "2": "paris", "3": "new  york"}, {"1": "Paris", "2": "Paris", "3": "New York"}
    assert exact_match(preds, answers)["accuracy"] == pytest.approx(100 / 3)
    assert exact_match(preds, answers, normalize=True)["accuracy"] == 100.0


def test_eval_reports_exact_match_and_first_token_side_by_side(tmp_path, lmm_of, capsys):
    """On a tiny random Llama the numbers are near zero; what is checked is that both come
    from one generation and agree with the predictions written."""
    from stv.evaluate import run_eval

    lmm = lmm_of("llama")
    test, train = load_dataset("fv:capitalize", split="test")[:6], load_dataset("fv:capitalize", split="train")
    task = task_for(test)
    scores = run_eval(lmm, test, task, tmp_path, train, shots=2, batch_size=3, max_new_tokens=3, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert scores["first_token_accuracy"] == 100.0 * sum(r["first_token_correct"] for r in rows) / 6
    assert scores["accuracy"] == 100.0 * sum(r["answer"] == e.answer for r, e in zip(rows, test)) / 6
    assert scores["metric"] == "exact" and scores["policy"] is None
    # the first generated token is the argmax of a plain forward
    from stv.evaluate import first_token_accuracy

    assert first_token_accuracy(lmm, test, task, train, shots=2) == scores["first_token_accuracy"]
