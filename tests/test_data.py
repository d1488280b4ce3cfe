"""Every loader on small fixture files in the original formats, written here."""

import json

import numpy as np
import pytest
from PIL import Image

from stv.data import DataError, load_dataset
from stv.tasks import TASKS, ChoiceTask, support_demos, task_for


def _image(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def test_vizwiz(tmp_path):
    records = [
        {
            "image": "VizWiz_val_00000000.jpg",
            "question": "What is this?",
            "answer_type": "other",
            "answerable": 1,
            "answers": [{"answer": a, "answer_confidence": "yes"} for a in ["soap"] * 3 + ["hand soap"] * 7],
        },
        {
            "image": "VizWiz_val_00000001.jpg",
            "question": "Color?",
            "answer_type": "unanswerable",
            "answerable": 0,
            "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10,
        },
    ]
    (tmp_path / "val.json").write_text(json.dumps(records))
    for r in records:
        _image(tmp_path / "val" / r["image"])
    ex = load_dataset("vizwiz", tmp_path, "val")
    assert [e.id for e in ex] == ["VizWiz_val_00000000.jpg", "VizWiz_val_00000001.jpg"]
    assert ex[0].answer == "hand soap" and len(ex[0].answers) == 10 and ex[1].metadata["answerable"] == 0
    assert ex[0].pil_images()[0].size == (8, 8)
    prompt = TASKS["vizwiz"].prompt([ex[1]], ex[0])
    assert prompt[0].startswith("Understand") and prompt[2] == "Color? Answer: unanswerable\n"
    assert prompt[-1] == "What is this? Answer:"
    (tmp_path / "val" / records[1]["image"]).unlink()
    with pytest.raises(DataError, match="VizWiz_val_00000001.jpg.*does not exist"):
        ex[1].pil_images()
    (tmp_path / "val" / records[0]["image"]).write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot be read"):
        ex[0].pil_images()


def test_okvqa(tmp_path):
    qs = {"questions": [{"question_id": 5, "image_id": 42, "question": "What sport?"}]}
    ann = {
        "annotations": [
            {
                "question_id": 5,
                "image_id": 42,
                "answer_type": "other",
                "question_type": "what",
                "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(["tennis"] * 8 + ["ball"] * 2)],
            }
        ]
    }
    (tmp_path / "OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(qs))
    (tmp_path / "mscoco_val2014_annotations.json").write_text(json.dumps(ann))
    _image(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    ex = load_dataset("okvqa", tmp_path, "val")
    assert ex[0].id == "5" and ex[0].answer == "tennis" and ex[0].pil_images()
    assert TASKS["okvqa"].prompt(ex, ex[0])[1] == "What sport? Answer:tennis\n"
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("okvqa", tmp_path, "train")


def test_dtd_and_choice_prompt(tmp_path):
    lines = ["banded/banded_0001.jpg", "dotted/dotted_0002.jpg", "striped/striped_0003.jpg"]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "test1.txt").write_text("\n".join(lines))
    for line in lines:
        _image(tmp_path / "images" / line)
    ex = load_dataset("dtd", tmp_path, "test")
    assert [e.answer for e in ex] == ["banded", "dotted", "striped"] and ex[0].choices == [
        "banded",
        "dotted",
        "striped",
    ]
    task = task_for(ex)
    assert task_for("hf:vizwiz") is TASKS["vizwiz"] and task_for("digits:letter").name == "digits"
    assert isinstance(task, ChoiceTask)
    a, b = task.options(ex[0])
    assert {a, b} <= set(ex[0].choices) and ex[0].answer in (a, b) and a != b
    assert task.target(ex[0]) == ("A" if a == "banded" else "B")
    text = task.prompt([ex[1]], ex[0])
    assert text[1].endswith(f"Answer: {task.target(ex[1])}\n") and text[-1].endswith("Answer:")
    assert task.options(ex[0]) == task.options(ex[0])  # same prompt every time
    with pytest.raises(DataError, match="labels/"):
        load_dataset("dtd", tmp_path, "train")


def test_flowers102_with_and_without_names(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 2]])})
    savemat(tmp_path / "setid.mat", {"trnid": np.array([[1]]), "valid": np.array([[2]]), "tstid": np.array([[2, 3]])})
    for i in (1, 2, 3):
        _image(tmp_path / "jpg" / f"image_{i:05d}.jpg")
    ex = load_dataset("flowers102", tmp_path, "test")
    assert [e.id for e in ex] == ["image_00002", "image_00003"] and ex[0].answer == "flower 2"
    (tmp_path / "class_names.txt").write_text("pink primrose\nhard-leaved pocket orchid\n")
    assert load_dataset("flowers102", tmp_path, "train")[0].answer == "pink primrose"


def test_cub(tmp_path):
    (tmp_path / "images.txt").write_text("1 001.Black_footed_Albatross/a.jpg\n2 002.Laysan_Albatross/b.jpg\n")
    (tmp_path / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (tmp_path / "image_class_labels.txt").write_text("1 1\n2 2\n")
    (tmp_path / "train_test_split.txt").write_text("1 1\n2 0\n")
    _image(tmp_path / "images" / "001.Black_footed_Albatross" / "a.jpg")
    _image(tmp_path / "images" / "002.Laysan_Albatross" / "b.jpg")
    train, test = load_dataset("cub", tmp_path, "train"), load_dataset("cub", tmp_path, "test")
    assert train[0].answer == "Black footed Albatross" and test[0].answer == "Laysan Albatross"


def test_mtv_records_and_support(tmp_path):
    for name in ("p.jpg", "n.jpg", "q.jpg"):
        _image(tmp_path / name)
    rec = [{"pos": "p.jpg", "neg": "n.jpg", "query": "q.jpg", "pos_label": "rose", "neg_label": "tulip"}]
    (tmp_path / "flowers.json").write_text(json.dumps(rec))
    ex = load_dataset(f"mtv:flower:{tmp_path / 'flowers.json'}", tmp_path)
    assert ex[0].choices == ["rose", "tulip"] and ex[0].answer == "rose"
    demos = support_demos(ex[0])
    assert [d.answer for d in demos] == ["rose", "tulip"]
    assert set(TASKS["choice"].options(ex[0])) == {"rose", "tulip"}
    (tmp_path / "bad.json").write_text(json.dumps([{"pos": "p.jpg"}]))
    with pytest.raises(DataError, match="lacks"):
        load_dataset(f"mtv:flower:{tmp_path / 'bad.json'}", tmp_path)


def test_jsonl_and_errors(tmp_path):
    _image(tmp_path / "x.jpg")
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"question_id": 7, "image": "x.jpg", "question": "q?", "answers": ["a", "b", "b"]}) + "\n\n"
    )
    ex = load_dataset(f"jsonl:{tmp_path / 'd.jsonl'}")
    assert ex[0].id == "7" and ex[0].answer == "b"
    (tmp_path / "e.jsonl").write_text('{"question": "no answer"}\n')
    with pytest.raises(DataError, match="e.jsonl:1 needs"):
        load_dataset(f"jsonl:{tmp_path / 'e.jsonl'}")
    with pytest.raises(DataError, match="needs --root"):
        load_dataset("vizwiz")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet", tmp_path)


def test_hugging_face_parquet_label_names_by_id(tmp_path):
    """Class names come from the label feature by id (nelorth/oxford-flowers sorts names as strings)."""
    import datasets

    from stv.data.loaders import load_hf

    images = [Image.fromarray(np.full((8, 8, 3), v, dtype=np.uint8)) for v in (10, 20, 30)]
    names = ["10", "2", "bluebell"]  # string-sorted: id 1 is "2", not the second class numerically
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    datasets.Dataset.from_dict({"image": images, "label": [1, 0, 2]}, features=features).to_parquet(
        tmp_path / "f.parquet"
    )
    ex = load_hf("flowers102", "train", data_files={"train": str(tmp_path / "f.parquet")})
    assert [e.answer for e in ex] == ["2", "10", "bluebell"] and ex[0].choices == ["10", "2", "bluebell"]
    vqa = datasets.Dataset.from_dict(
        {"question_id": [3], "image": images[:1], "question": ["what?"], "answers": [["x", "y", "y"]]}
    )
    vqa.to_parquet(tmp_path / "v.parquet")
    ex = load_hf("vizwiz", "val", data_files={"val": str(tmp_path / "v.parquet")})
    assert ex[0].id == "3" and ex[0].answer == "y" and ex[0].pil_images()[0].size == (8, 8)
