"""VQA / VizWiz / choice metrics on hand-made cases for every normalisation rule."""

import pytest

from stv.errors import StvError
from stv.metrics import normalize_answer, score, vizwiz_scores, vqa_accuracy, vqa_accuracy_one


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("3.5", "3.5"),  # a period before a digit stays
        ("yes.", "yes"),  # a trailing period goes
        ("1,000", "1000"),  # a digit comma: every mark is deleted
        ("red, white", "red white"),  # a mark next to a space is deleted
        ("red,white", "red white"),  # otherwise it becomes a space
        ("black/white", "black white"),
        ("Two Dogs", "2 dogs"),  # lower case, number words
        ("ten", "10"),
        ("none", "0"),
        ("a dog", "dog"),  # articles
        ("The Cat in the hat", "cat in hat"),
        ("dont", "don't"),  # contractions
        ("isnt it", "isn't it"),
        ("  yes\n", "yes"),
        ("it's (maybe) blue!", "it's maybe blue"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_leave_one_out_with_disagreeing_annotators():
    answers = ["yes"] * 3 + ["no"] * 7
    assert vqa_accuracy_one("yes", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy_one("no", answers) == pytest.approx(1.0)
    assert vqa_accuracy_one("maybe", answers) == 0.0
    assert vqa_accuracy_one("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)


def test_ground_truth_gets_punctuation_only_when_annotators_disagree():
    assert vqa_accuracy_one("dog", ["dog."] * 10) == 0.0  # identical answers are left as they are
    assert vqa_accuracy_one("dog", ["dog."] * 4 + ["cat"] * 6) == pytest.approx(1.0)
    assert vqa_accuracy_one("dog", ["Dog."] * 4 + ["cat"] * 6) == 0.0  # no lower-casing of ground truth


def test_vizwiz_does_not_normalise_ground_truth_and_scores_answerability():
    answers = {"a.jpg": ["dog."] * 4 + ["cat"] * 6, "b.jpg": ["unanswerable"] * 10, "c.jpg": ["red"] * 10}
    preds = {"a.jpg": "dog", "b.jpg": "Unanswerable.", "c.jpg": "unanswerable"}
    assert vqa_accuracy(preds, answers)["accuracy"] == pytest.approx(200 / 3)
    viz = vizwiz_scores(preds, answers, answerable={"a.jpg": 1, "b.jpg": 0, "c.jpg": 1})
    assert viz["accuracy"] == pytest.approx(100 / 3)  # "dog" no longer matches "dog."
    assert viz["answerability"]["precision"] == 100.0 and viz["answerability"]["recall"] == 50.0
    with pytest.raises(ValueError, match="no prediction"):
        vqa_accuracy({}, answers)


def test_choice_accuracy_and_post_processing():
    assert score("choice", {"1": " A", "2": "B\n"}, {"1": ["A"], "2": ["A"]})["accuracy"] == 50.0
    from stv.tasks import TASKS

    assert TASKS["vizwiz"].postprocess(" 3.5 apples\nsecond line") == "3.5 apples"


def test_one_score_for_every_metric():
    preds = {"1": "two", "2": "Cat", "3": "unanswerable"}
    answers = {"1": ["2"] * 10, "2": ["cat"] * 10, "3": ["unanswerable"] * 10}
    vqa = score("vqa", preds, answers, groups={"1": "number", "2": "other"})
    assert vqa["accuracy"] == 100.0 and vqa["by_answer_type"] == {"number": 100.0, "other": 100.0}  # "two" -> "2"
    assert score("exact", preds, answers)["accuracy"] == pytest.approx(100 / 3)  # only "unanswerable" is exact
    assert score("exact_normalized", preds, answers)["accuracy"] == pytest.approx(200 / 3)  # case folds, digits don't
    vizwiz = score("vizwiz", preds, answers, answerable={"1": True, "2": True, "3": False})
    assert vizwiz["accuracy"] == 100.0 and vizwiz["answerability"]["f1"] == 100.0
    with pytest.raises(StvError, match="unknown metric 'bleu'"):
        score("bleu", preds, answers)  # type: ignore[arg-type]
