"""Official metrics: VQA accuracy (VQAv2 / OK-VQA), its VizWiz variant, choice accuracy.

Written here from the rules of the official evaluation (GT-Vision-Lab/VQA ``vqaEval.py``):
the prediction is normalised (punctuation, lower case, number words, articles,
contractions); ground-truth answers get only the punctuation step, and only when the
annotators disagree; per question, the mean over the 10 leave-one-out subsets of
min(1, matches among the other 9 / 3). VizWiz's official script does not normalise ground
truth at all.
"""

from __future__ import annotations

import re
from typing import Literal, Mapping, Sequence

from .errors import StvError

_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # a period not followed by a digit ("3.5" survives)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")  # a comma between digits ("1,000")


def normalize_punctuation(text: str) -> str:
    """The official punctuation step: next to a space (or anywhere when the text has a digit
    comma) a mark is deleted, otherwise it becomes a space; then periods not before a digit go."""
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def normalize_digits_articles(text: str) -> str:
    """The official VQA step: number words to digits, articles dropped, contractions fixed."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """How the official evaluation normalises a *prediction*."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return normalize_digits_articles(normalize_punctuation(text))


def vqa_accuracy_one(prediction: str, answers: Sequence[str], normalize_gt: bool = True) -> float:
    """Accuracy in [0, 1] of one prediction against (usually 10) annotator answers."""
    if not answers:
        raise StvError("a question needs at least one ground-truth answer")
    pred = normalize_answer(prediction)
    gts = list(answers)
    if normalize_gt and len(set(gts)) > 1:
        gts = [normalize_punctuation(a) for a in gts]
    scores = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        scores.append(min(1.0, sum(a == pred for a in others) / 3.0))
    return sum(scores) / len(scores)


def vqa_accuracy(predictions: dict[str, str], answers: Mapping[str, Sequence[str]], normalize_gt: bool = True) -> dict:
    """{"accuracy": ×100, "n": ..., "per_question": {...}}; every annotated question must have a prediction."""
    missing = [q for q in answers if q not in predictions]
    if missing:
        raise StvError(f"{len(missing)} questions have no prediction (first: {missing[0]!r})")
    per = {q: vqa_accuracy_one(predictions[q], a, normalize_gt) for q, a in answers.items()}
    return {"accuracy": 100.0 * sum(per.values()) / max(1, len(per)), "n": len(per), "per_question": per}


def vizwiz_scores(
    predictions: dict[str, str], answers: Mapping[str, Sequence[str]], answerable: dict[str, int] | None = None
) -> dict:
    """VizWiz accuracy (no ground-truth normalisation) plus answerability precision/recall/F1/AP.

    A prediction says "answerable" iff its normalised text is not "unanswerable".
    """
    result = vqa_accuracy(predictions, answers, normalize_gt=False)
    if answerable:
        from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

        qs = [q for q in answers if q in answerable]
        truth = [int(answerable[q]) for q in qs]
        said = [int(normalize_answer(predictions[q]) != "unanswerable") for q in qs]
        if len(set(truth)) > 1:
            result["answerability"] = {
                "average_precision": 100.0 * average_precision_score(truth, said),
                "f1": 100.0 * f1_score(truth, said),
                "precision": 100.0 * precision_score(truth, said, zero_division=0),
                "recall": 100.0 * recall_score(truth, said),
            }
    return result


def exact_match(predictions: dict[str, str], answers: dict[str, str], normalize: bool = False) -> dict:
    """Exact match after stripping whitespace (``normalize``: also fold case and inner
    whitespace, which would hide the point of a task such as capitalize); ×100."""
    missing = [q for q in answers if q not in predictions]
    if missing:
        raise StvError(f"{len(missing)} questions have no prediction (first: {missing[0]!r})")
    fold = (lambda t: " ".join(str(t).split()).lower()) if normalize else (lambda t: str(t).strip())  # noqa: E731
    per = {q: float(fold(predictions[q]) == fold(a)) for q, a in answers.items()}
    return {"accuracy": 100.0 * sum(per.values()) / max(1, len(per)), "n": len(per), "per_question": per}


def breakdown(per_question: dict[str, float], groups: dict[str, str]) -> dict[str, float]:
    """Mean accuracy (×100) per group (e.g. answer_type)."""
    sums: dict[str, list[float]] = {}
    for q, score in per_question.items():
        if q in groups:
            sums.setdefault(groups[q], []).append(score)
    return {g: 100.0 * sum(v) / len(v) for g, v in sorted(sums.items())}


Metric = Literal["vqa", "vizwiz", "choice", "exact", "exact_normalized"]


def score(
    metric: Metric,
    predictions: dict[str, str],
    answers: Mapping[str, Sequence[str]],
    answerable: Mapping[str, bool] | None = None,
    groups: Mapping[str, str] | None = None,
) -> dict:
    """One entry point for every metric (``stv score`` and ``stv eval`` both call it).

    ``answers``: id -> reference answers (VQA-style lists; the exact metrics use the first);
    ``answerable``: VizWiz's flags; ``groups``: id -> answer type for a per-type breakdown.
    """
    if metric == "vqa":
        result = vqa_accuracy(predictions, answers)
    elif metric == "vizwiz":
        result = vizwiz_scores(predictions, answers, dict(answerable or {}))
    elif metric in ("choice", "exact", "exact_normalized"):
        result = exact_match(predictions, {q: a[0] for q, a in answers.items()}, normalize=metric == "exact_normalized")
    else:
        raise StvError(f"unknown metric {metric!r}; choose from vqa, vizwiz, choice, exact, exact_normalized")
    if groups:
        result["by_answer_type"] = breakdown(result["per_question"], dict(groups))
    return result
