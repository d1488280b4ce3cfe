"""Loaders for the paper's datasets (original files or Hugging Face parquet) and JSONL.

Every loader returns ``list[Example]``; images are :class:`LazyImage` (opened when a prompt
is built), so loading a split reads only the annotation files.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

from .example import DataError, DatasetImage, Example, LazyImage, refuse_constant


def _read_json(path: Path, shape: type = list):
    """A JSON file whose top level is ``shape`` (NaN and Infinity refused)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; point --root at the dataset folder")
    try:
        data = json.loads(path.read_text(), parse_constant=refuse_constant)
    except (json.JSONDecodeError, ValueError) as err:
        raise DataError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, shape):
        raise DataError(f"{path} holds a JSON {type(data).__name__}, not a {shape.__name__}")
    return data


def _checked(record, where: str, fields: dict[str, str]) -> dict:
    """``record`` as a dict whose ``fields`` have their kinds: "text" (a string), "id" (a
    string or an integer), "answers" (a list of strings or of {"answer": string}), each with a
    trailing "?" when it may be absent."""
    if not isinstance(record, dict):
        raise DataError(f"{where} is a JSON {type(record).__name__}, not an object")
    for key, kind in fields.items():
        optional, kind = kind.endswith("?"), kind.rstrip("?")
        if key not in record:
            if optional:
                continue
            raise DataError(f"{where} lacks {key!r}")
        value = record[key]
        ok = {
            "text": isinstance(value, str),
            "id": isinstance(value, (str, int)) and not isinstance(value, bool),
            "answers": isinstance(value, list)
            and all(isinstance(a, str) or isinstance(a, dict) and isinstance(a.get("answer"), str) for a in value),
        }[kind]
        if not ok:
            wanted = {
                "text": "a string",
                "id": "a string or an integer",
                "answers": 'a list of strings or {"answer": string}',
            }
            raise DataError(f"{where}: {key!r} must be {wanted[kind]}, got {_kind(value)}")
    return record


def majority_first(answers: list[str]) -> list[str]:
    """The 10 annotator answers with the most common one first (demonstrations use it)."""
    if not answers:
        return answers
    top = Counter(answers).most_common(1)[0][0]
    rest = list(answers)
    rest.remove(top)
    return [top, *rest]


# ----------------------------------------------------------------------------- VQA
def load_vizwiz(root: str | Path, split: str = "val") -> list[Example]:
    """``root/{split}.json`` (official annotations) with images in ``root/{split}/``."""
    root = Path(root)
    records = _read_json(root / f"{split}.json")
    out = []
    for i, r in enumerate(records):
        fields = {"image": "text", "question": "text", "answers": "answers?"}
        r = _checked(r, f"{root / f'{split}.json'} record {i}", fields)
        answers = [a["answer"] if isinstance(a, dict) else a for a in r.get("answers", [])]
        out.append(
            Example(
                id=r["image"],
                images=[LazyImage(root / split / r["image"], r["image"])],
                question=r["question"],
                answers=majority_first(answers),
                metadata={"answer_type": r.get("answer_type"), "answerable": r.get("answerable")},
            )
        )
    return out


def load_okvqa(root: str | Path, split: str = "val") -> list[Example]:
    """VQA-format questions + annotations; COCO 2014 images in ``root/{split}2014/``."""
    root = Path(root)
    files = (root / f"OpenEnded_mscoco_{split}2014_questions.json", root / f"mscoco_{split}2014_annotations.json")
    questions, annotated = (_read_json(f, dict).get(key) for f, key in zip(files, ("questions", "annotations")))
    for file, items in zip(files, (questions, annotated)):
        if not isinstance(items, list):
            raise DataError(f"{file} has no list of {'questions' if file == files[0] else 'annotations'}")
    questions = [
        _checked(q, f"{files[0]} question {i}", {"question_id": "id", "image_id": "id", "question": "text"})
        for i, q in enumerate(questions)
    ]
    annotations = {
        a["question_id"]: a
        for a in (
            _checked(a, f"{files[1]} annotation {i}", {"question_id": "id", "answers": "answers"})
            for i, a in enumerate(annotated)
        )
    }
    out = []
    for q in questions:
        ann = annotations.get(q["question_id"])
        if ann is None:
            raise DataError(f"question {q['question_id']} has no annotation in mscoco_{split}2014_annotations.json")
        if not str(q["image_id"]).isdigit():
            raise DataError(
                f"{files[0]}: question {q['question_id']}'s image_id must be a number, got {q['image_id']!r}"
            )
        image = root / f"{split}2014" / f"COCO_{split}2014_{int(q['image_id']):012d}.jpg"
        out.append(
            Example(
                id=str(q["question_id"]),
                images=[LazyImage(image, str(q["question_id"]))],
                question=q["question"],
                answers=majority_first([a["answer"] if isinstance(a, dict) else a for a in ann["answers"]]),
                metadata={"answer_type": ann.get("answer_type"), "question_type": ann.get("question_type")},
            )
        )
    return out


JSONL_SPLITS = ("train", "test", "all")


def load_jsonl(path: str | Path, root: str | Path | None = None, split: str = "all") -> list[Example]:
    """Generic JSONL: ``{"id"|"question_id", "image"|"images", "question", "answer"|"answers",
    "choices"?, "split"?}``, each field checked (file, line, field and the type expected).

    ``split``: records whose ``"split"`` field names it; a file without that field is split as
    ``fv:`` files are, by a fixed hash of the question (about 70/30), so fitting on ``train``
    and evaluating on ``test`` never share a query. ``all``: every record."""
    from .function_vectors import in_train

    path = Path(path)
    root = Path(root) if root else path.parent
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            records.append((n, _jsonl_record(path, n, line)))
    ids = [str(r.get("id", r.get("question_id", n))) for n, r in records]
    twice = next((i for i in ids if ids.count(i) > 1), None) if len(set(ids)) < len(ids) else None
    if twice is not None:
        raise DataError(f"{path}: id {twice!r} appears twice; every record needs its own id")
    named = [r.get("split") for _, r in records if "split" in r]
    splits = {"all", *map(str, named)} if named else set(JSONL_SPLITS)  # a file's own split names, or the hash split
    if split not in splits:
        raise DataError(f"jsonl:{path}: split {split!r} must be one of {', '.join(sorted(splits))}")
    out = []
    for n, r in records:
        rid = str(r.get("id", r.get("question_id", n)))
        if split != "all":
            side = r["split"] if named else ("train" if in_train(r["question"]) else "test")
            if side != split:
                continue
        images = r.get("images", [r["image"]] if "image" in r else [])
        answers = r["answers"] if "answers" in r else [r["answer"]]  # one of the two: checked per line
        out.append(
            Example(
                id=rid,
                images=[LazyImage(root / im, rid) for im in images],
                question=r["question"],
                answers=majority_first([a["answer"] if isinstance(a, dict) else a for a in answers]),
                choices=r.get("choices"),
                metadata={k: v for k, v in r.items() if k not in ("image", "images", "question", "split")},
            )
        )
    if named and len(named) != len(records):
        raise DataError(f"{path}: {len(named)} of {len(records)} records have a 'split' field; give it to all or none")
    return out


def _jsonl_record(path: Path, n: int, line: str) -> dict:
    """One JSONL line as a record whose every field has the type the loader expects."""
    where = f"{path}:{n}"
    try:
        r = json.loads(line, parse_constant=refuse_constant)
    except (json.JSONDecodeError, ValueError) as err:
        raise DataError(f"{where} is not valid JSON ({err})") from None
    if not isinstance(r, dict):
        raise DataError(
            f"{where} is a JSON {type(r).__name__}; each line must be an object with 'question' and 'answer'"
        )
    if "question" not in r or ("answer" not in r and "answers" not in r):
        raise DataError(f"{where} needs 'question' and 'answer' (or 'answers')")
    if not isinstance(r["question"], str):
        raise DataError(f"{where}: 'question' must be a string, got {_kind(r['question'])}")
    for key in ("id", "question_id"):
        if key in r and (isinstance(r[key], bool) or not isinstance(r[key], (str, int))):
            raise DataError(f"{where}: {key!r} must be a string or an integer, got {_kind(r[key])}")
    if "answer" in r and "answers" not in r and not isinstance(r["answer"], str):
        raise DataError(f"{where}: 'answer' must be a string, got {_kind(r['answer'])}")
    if "answers" in r and (
        not isinstance(r["answers"], list)
        or not all(isinstance(a, str) or isinstance(a, dict) and isinstance(a.get("answer"), str) for a in r["answers"])
    ):
        raise DataError(
            f"{where}: 'answers' must be a list of strings (or of {{\"answer\": string}}), got {_kind(r['answers'])}"
        )
    given = r["answers"] if "answers" in r else [r["answer"]]
    if not any((a if isinstance(a, str) else a["answer"]).strip() for a in given):
        raise DataError(
            f'{where}: record {str(r.get("id", r.get("question_id", n)))!r} has no answer ("answers": [] or blank); fix or drop it'
        )
    if "image" in r and not isinstance(r["image"], str):
        raise DataError(f"{where}: 'image' must be a file name (a string), got {_kind(r['image'])}")
    if "images" in r and (not isinstance(r["images"], list) or not all(isinstance(i, str) for i in r["images"])):
        raise DataError(f"{where}: 'images' must be a list of file names, got {_kind(r['images'])}")
    if (
        "choices" in r
        and r["choices"] is not None
        and (not isinstance(r["choices"], list) or not all(isinstance(c, str) for c in r["choices"]))
    ):
        raise DataError(f"{where}: 'choices' must be a list of strings, got {_kind(r['choices'])}")
    if "split" in r and not isinstance(r["split"], str):
        raise DataError(f'{where}: \'split\' must be a string such as "train" or "test", got {_kind(r["split"])}')
    return r


def _kind(value) -> str:
    """A short description of a JSON value for an error message."""
    text = json.dumps(value)
    return f"{type(value).__name__} {text[:40]}" + ("..." if len(text) > 40 else "")


# ---------------------------------------------------------------- classification
def _classification(items: list[tuple[Path, str]], kind: str, ids: list[str]) -> list[Example]:
    names = sorted({label for _, label in items})
    return [
        Example(
            id=i,
            images=[LazyImage(p, i)],
            question=f"What is the type of {kind} in the image?",
            answers=[label],
            choices=names,
            metadata={"class": label, "kind": kind},
        )
        for i, (p, label) in zip(ids, items)
    ]


def load_dtd(root: str | Path, split: str = "test", fold: int = 1) -> list[Example]:
    """``root/images/<class>/<file>.jpg`` with ``root/labels/{split}{fold}.txt``."""
    root = Path(root)
    listing = root / "labels" / f"{split}{fold}.txt"
    if not listing.is_file():
        raise DataError(f"{listing} does not exist; DTD splits are labels/{{train,val,test}}{{1..10}}.txt")
    rel = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    items = [(root / "images" / r, r.split("/")[0].replace("_", " ")) for r in rel]
    return _classification(items, "texture", rel)


def load_flowers102(root: str | Path, split: str = "test", names: list[str] | None = None) -> list[Example]:
    """``root/jpg/image_%05d.jpg``, ``imagelabels.mat`` and ``setid.mat`` (labels 1..102).

    The original files carry no class names: pass ``names`` (102, in label order) or put
    them one per line in ``root/class_names.txt``; otherwise "flower N" is used.
    """
    from scipy.io import loadmat

    root = Path(root)
    for f in ("imagelabels.mat", "setid.mat"):
        if not (root / f).is_file():
            raise DataError(f"{root / f} does not exist")
    labels = loadmat(root / "imagelabels.mat")["labels"].ravel()
    key = {"train": "trnid", "val": "valid", "test": "tstid"}[split]
    ids = loadmat(root / "setid.mat")[key].ravel()
    if names is None and (root / "class_names.txt").is_file():
        names = [n.strip() for n in (root / "class_names.txt").read_text().splitlines() if n.strip()]
    name_of = (lambda k: names[k - 1]) if names else (lambda k: f"flower {k}")  # noqa: E731
    items = [(root / "jpg" / f"image_{int(i):05d}.jpg", name_of(int(labels[int(i) - 1]))) for i in ids]
    return _classification(items, "flower", [f"image_{int(i):05d}" for i in ids])


def load_cub(root: str | Path, split: str = "test") -> list[Example]:
    """CUB-200-2011: images.txt, classes.txt, image_class_labels.txt, train_test_split.txt."""
    root = Path(root)

    def table(name: str) -> dict[str, str]:
        path = root / name
        if not path.is_file():
            raise DataError(f"{path} does not exist; --root must be the CUB_200_2011 folder")
        return dict(line.split(" ", 1) for line in path.read_text().splitlines() if line.strip())

    images, classes = table("images.txt"), table("classes.txt")
    labels, is_train = table("image_class_labels.txt"), table("train_test_split.txt")
    want = "1" if split == "train" else "0"
    ids = [i for i in images if is_train[i].strip() == want]
    clean = lambda c: c.split(".", 1)[-1].replace("_", " ")  # noqa: E731  "001.Black_footed_Albatross"
    items = [(root / "images" / images[i].strip(), clean(classes[labels[i].strip()].strip())) for i in ids]
    return _classification(items, "bird", ids)


def load_mtv_choice(path: str | Path, root: str | Path, kind: str) -> list[Example]:
    """MTV's 2-way 1-shot records ``{pos, neg, query, pos_label, neg_label}`` (paths relative to root)."""
    records = _read_json(Path(path))
    root = Path(root)
    out = []
    for i, r in enumerate(records):
        fields = {key: "text" for key in ("pos", "neg", "query", "pos_label", "neg_label")}
        r = _checked(r, f"{path} record {i}", {**fields, "id": "id?"})
        rid = str(r.get("id", i))
        out.append(
            Example(
                id=rid,
                images=[LazyImage(root / r["query"], rid)],
                question=f"What is the type of {kind} in the image?",
                answers=[r["pos_label"]],
                choices=[r["pos_label"], r["neg_label"]],
                metadata={
                    "class": r["pos_label"],
                    "kind": kind,
                    "support": [
                        (LazyImage(root / r["pos"], rid), r["pos_label"]),
                        (LazyImage(root / r["neg"], rid), r["neg_label"]),
                    ],
                },
            )
        )
    return out


# ------------------------------------------------------------------ Hugging Face
HF_REPOS = {
    "vizwiz": "lmms-lab/VizWiz-VQA",
    "okvqa": "lmms-lab/OK-VQA",
    "dtd": "tanganke/dtd",
    "flowers102": "nelorth/oxford-flowers",
    "cub": "bentrevett/caltech-ucsd-birds-200-2011",
}
_KINDS = {"dtd": "texture", "flowers102": "flower", "cub": "bird"}


def load_hf(name: str, split: str, repo: str | None = None, data_files=None) -> list[Example]:
    """A dataset from its Hugging Face parquet repo (needs ``pip install stv[datasets]``).

    Class names come from the ``label`` feature's names, looked up by label id, never by
    position in a sorted list (nelorth/oxford-flowers sorts its names as strings).
    """
    try:
        import datasets
    except ImportError:
        raise DataError(
            "reading Hugging Face datasets needs the 'datasets' package: pip install 'stv[datasets]'"
        ) from None
    if data_files is not None:
        ds = datasets.load_dataset("parquet", data_files=data_files, split=split)
    else:
        ds = datasets.load_dataset(repo or HF_REPOS[name], split=split)
    out = []
    if name in _KINDS:
        feature = ds.features.get("label")
        names = getattr(feature, "names", None)
        for i, label_id in enumerate(ds["label"]):  # reads the label column only; images stay on disk
            label = names[label_id] if names else str(label_id)
            out.append(
                Example(
                    id=str(i),
                    images=[DatasetImage(ds, i)],
                    question=f"What is the type of {_KINDS[name]} in the image?",
                    answers=[label.replace("_", " ")],
                    metadata={"class": label},
                )
            )
        all_names = sorted({e.answer for e in out})
        for e in out:
            e.choices = all_names
        return out
    for i, row in enumerate(ds.remove_columns("image")):  # images stay on disk until a prompt needs them
        answers = row.get("answers") or [row.get("answer", "")]
        answers = [a["answer"] if isinstance(a, dict) else str(a) for a in answers]
        out.append(
            Example(
                id=str(row.get("question_id", i)),
                images=[DatasetImage(ds, i)],
                question=row["question"],
                answers=majority_first(answers),
                metadata={"answer_type": row.get("answer_type", row.get("category"))},
            )
        )
    return out


LOADERS: dict[str, Callable[..., list[Example]]] = {
    "vizwiz": load_vizwiz,
    "okvqa": load_okvqa,
    "dtd": load_dtd,
    "flowers102": load_flowers102,
    "cub": load_cub,
}
