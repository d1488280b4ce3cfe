"""No stale number, no lost file: predictions are tied to the records they answered, stv
removes only what it wrote, Ctrl-C keeps work, and every loader turns any JSON into a record
or a DataError."""

import json
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stv.evaluate
from stv.cli.main import main
from stv.data import DataError, load_dataset

from .test_bad_inputs import TINY_FIT


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from stv.testing import build

    return str(build("llama", tmp_path_factory.mktemp("rel") / "llama"))


def _fv(path, outputs):
    path.write_text(json.dumps([{"input": f"w{i}", "output": o} for i, o in enumerate(outputs)]))
    return f"fv:{path}"


def _eval(llama, spec, out, *extra):
    return main(
        ["eval", "--model", llama, "--dataset", spec, "--split", "all", "--limit", "6", "--out", str(out)] + list(extra)
    )


def test_predictions_of_edited_records_are_refused(llama, tmp_path, capsys):
    spec = _fv(tmp_path / "t.json", [f"W{i}" for i in range(12)])
    assert _eval(llama, spec, tmp_path / "ev", "--max-new-tokens", "2") == 0
    _fv(tmp_path / "t.json", [f"X{i}" for i in range(12)])  # same inputs, other answers
    capsys.readouterr()
    assert _eval(llama, spec, tmp_path / "ev", "--max-new-tokens", "2") == 2
    assert "held other content" in capsys.readouterr().err
    assert _eval(llama, spec, tmp_path / "ev", "--max-new-tokens", "2", "--recompute") == 0


def test_recompute_removes_only_what_stv_wrote(llama, tmp_path):
    spec = _fv(tmp_path / "t.json", [f"W{i}" for i in range(12)])
    out = tmp_path / "ev"
    assert _eval(llama, spec, out, "--max-new-tokens", "2") == 0
    mine = {"predictions_baseline_gpt4.jsonl": "{}\n", "scores_human.json": "{}", "notes.txt": "x"}
    for name, text in mine.items():
        (out / name).write_text(text)
    assert _eval(llama, spec, out, "--max-new-tokens", "3", "--recompute") == 0
    assert {name: (out / name).read_text() for name in mine} == mine
    assert json.loads((out / "settings.json").read_text())["max_new_tokens"] == 3


def test_recompute_never_replaces_a_settings_file_stv_did_not_write(llama, tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "settings.json").write_text('{"mine": true}')
    spec = _fv(tmp_path / "t.json", [f"W{i}" for i in range(12)])
    assert _eval(llama, spec, out, "--recompute") == 2
    assert "was not written by stv" in capsys.readouterr().err
    assert (out / "settings.json").read_text() == '{"mine": true}'


def test_ctrl_c_keeps_what_was_written_and_the_rerun_resumes(llama, tmp_path, capsys, monkeypatch):
    spec = _fv(tmp_path / "t.json", [f"W{i}" for i in range(12)])
    real, calls = stv.evaluate.answer_rows, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stv.evaluate, "answer_rows", interrupted)
    assert _eval(llama, spec, tmp_path / "ev", "--batch-size", "3", "--max-new-tokens", "2") == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    kept = (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    assert len(kept) == 3  # the first batch
    monkeypatch.setattr(stv.evaluate, "answer_rows", real)
    assert _eval(llama, spec, tmp_path / "ev", "--batch-size", "3", "--max-new-tokens", "2") == 0
    assert len((tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()) == 6


def test_a_fit_that_fails_after_loading_leaves_the_users_files_alone(llama, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    # 10 clusters from 4 pairs passes the flag checks (K unset) but not the model's check after loading
    argv = ["fit", "--model", llama, "--dataset", "digits:parity_AB", "--out", str(out)]
    assert main(argv + [*TINY_FIT[:2], "--clusters", "200", *TINY_FIT[4:], "--pairs", "250"]) == 2
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_artifacts_follow_the_umask(llama, tmp_path):
    spec = _fv(tmp_path / "t.json", [f"W{i}" for i in range(40)])
    old = os.umask(0o022)
    try:
        assert main(["fit", "--model", llama, "--dataset", spec, "--out", str(tmp_path / "tv"), *TINY_FIT]) == 0
    finally:
        os.umask(old)
    for name in ("task_vectors.safetensors", "task_vectors.json", "fit_log.json"):
        assert stat.S_IMODE((tmp_path / "tv" / name).stat().st_mode) == 0o644, name


def test_stv_cache_pointing_at_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("STV_CACHE", str(tmp_path / "f"))
    assert main(["inspect", "--model", "smollm2-135m"]) == 2
    assert "STV_CACHE" in capsys.readouterr().err


def test_jsonl_splits_are_disjoint_and_honour_a_split_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": i, "question": f"q{i}", "answer": "a"}) + "\n" for i in range(60)))
    train, test = load_dataset(f"jsonl:{path}", split="train"), load_dataset(f"jsonl:{path}", split="test")
    assert train and test and not {e.question for e in train} & {e.question for e in test}
    assert len(train) + len(test) == len(load_dataset(f"jsonl:{path}", split="all")) == 60
    path.write_text(
        "".join(
            json.dumps({"question": f"q{i}", "answer": "a", "split": "val" if i % 3 else "dev"}) + "\n"
            for i in range(9)
        )
    )
    assert len(load_dataset(f"jsonl:{path}", split="val")) == 6 and len(load_dataset(f"jsonl:{path}", split="dev")) == 3
    with pytest.raises(DataError, match="split 'train' must be one of"):
        load_dataset(f"jsonl:{path}", split="train")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
FIELDS = ["id", "question_id", "question", "answer", "answers", "image", "images", "choices", "split"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    record=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), split=st.sampled_from(["train", "test", "all"])
)
def test_any_json_in_any_jsonl_field_is_a_record_or_a_data_error(tmp_path, record, split):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(record) + "\n")
    try:
        examples = load_dataset(f"jsonl:{path}", split=split)
    except DataError:
        return
    for e in examples:
        assert isinstance(e.question, str) and all(isinstance(a, str) for a in e.answers) and e.answers[0].strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.dictionaries(st.sampled_from(["input", "output"]), JSON, max_size=2), max_size=3) | JSON)
def test_any_json_in_an_fv_file_is_a_record_or_a_data_error(tmp_path, records):
    path = tmp_path / "h.json"
    path.write_text(json.dumps(records))
    try:
        examples = load_dataset(f"fv:{path}", split="all")
    except DataError:
        return
    assert all(isinstance(e.question, str) and isinstance(e.answer, str) and "\n" not in e.answer for e in examples)


def test_an_input_with_two_outputs_loads_with_a_warning(tmp_path):
    from stv.data.example import DataWarning

    (tmp_path / "t.json").write_text(json.dumps([{"input": "I", "output": "J"}, {"input": "I", "output": "II"}]))
    with pytest.warns(DataWarning, match="1 inputs appear with different outputs \\('I': 'J' / 'II'\\)"):
        examples = load_dataset(f"fv:{tmp_path / 't.json'}", split="all")
    assert [e.answer for e in examples] == ["J", "II"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["vizwiz", "mtv", "okvqa"]),
    record=st.dictionaries(
        st.sampled_from(["image", "question", "answers", "pos", "neg", "query", "pos_label", "neg_label", "id"]),
        JSON | st.just("x.png"),
        max_size=7,
    ),
    ids=st.tuples(JSON, JSON),
)
def test_any_json_in_the_paper_datasets_files_is_a_record_or_a_data_error(tmp_path, kind, record, ids):
    """VizWiz, OK-VQA and MTV's records: any value in any field loads or is refused with a DataError."""
    if kind == "vizwiz":
        (tmp_path / "val.json").write_text(json.dumps([record]))
        spec, root = "vizwiz", tmp_path
    elif kind == "mtv":
        (tmp_path / "m.json").write_text(json.dumps([record]))
        spec, root = f"mtv:flower:{tmp_path / 'm.json'}", tmp_path
    else:
        question = {"question_id": ids[0], "image_id": ids[1], "question": record.get("question", "q")}
        annotation = {"question_id": ids[0], "answers": record.get("answers", [{"answer": "a"}])}
        (tmp_path / "OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": [question]}))
        (tmp_path / "mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": [annotation]}))
        spec, root = "okvqa", tmp_path
    try:
        examples = load_dataset(spec, root=root, split="val")
    except DataError:
        return
    for e in examples:
        assert isinstance(e.question, str) and all(isinstance(a, str) for a in e.answers) and e.answers[0].strip()
