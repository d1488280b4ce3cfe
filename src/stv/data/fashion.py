"""Fashion-MNIST (Zalando, MIT): 60k / 10k grey 28x28 images of ten clothing classes, read
from its IDX files. Debian ships them (``apt-get install dataset-fashion-mnist``, into
``/usr/share/datasets/fashion-mnist``); ``STV_FASHION_MNIST`` names another folder.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .digits import DigitTask
from .example import DataError, Example

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "apt-get install dataset-fashion-mnist (Debian), or set STV_FASHION_MNIST to a folder of its IDX files"
CLASSES = ("T-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
CATEGORY = {  # a coarser label: what the item is worn as
    **{c: "clothing" for c in ("T-shirt", "trousers", "pullover", "dress", "coat", "shirt")},
    **{c: "footwear" for c in ("sandal", "sneaker", "ankle boot")},
    "bag": "bag",
}
PLURAL = {"trousers": "trousers", "dress": "dresses"}  # the rest add "s"
_FILES = {"train": "train", "test": "t10k"}
_MAGIC = {"images": 2051, "labels": 2049}


def fashion_dir() -> Path:
    """The folder of the IDX files (``STV_FASHION_MNIST``, else Debian's)."""
    return Path(os.environ.get("STV_FASHION_MNIST") or DEFAULT_DIR)


def _idx(path: Path, kind: str) -> np.ndarray:
    """An IDX file's array: labels (N,) or images (N, 28, 28), uint8; gzipped or not."""
    if not path.is_file() and path.with_suffix("").is_file():
        path = path.with_suffix("")
    if not path.is_file():
        raise DataError(f"Fashion-MNIST: {path} is missing; {INSTALL}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = 1 if kind == "labels" else 3
    header = 4 + 4 * dims
    if len(data) < header or int.from_bytes(data[:4], "big") != _MAGIC[kind]:
        raise DataError(f"Fashion-MNIST: {path} is not an IDX {kind} file (magic {_MAGIC[kind]}); {INSTALL}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    values = np.frombuffer(data, np.uint8, offset=header)
    if values.size != int(np.prod(shape)):
        raise DataError(f"Fashion-MNIST: {path} holds {values.size} bytes for shape {shape}; the file is cut")
    return values.reshape(shape)


def fashion_images(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) in 0-9: ``CLASSES``) of ``split``, train or test
    (read once per folder and process, read-only)."""
    if split not in _FILES:
        raise DataError(f"Fashion-MNIST has the splits train and test, not {split!r}")
    root = fashion_dir()
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in root.glob(f"{_FILES[split]}-*") if p.is_file())
    return _read(root, split, stamp)


@functools.lru_cache(maxsize=4)
def _read(root: Path, split: str, stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of ``split`` (``stamp``: the files' sizes and times, so a changed file is read again)."""
    stem = _FILES[split]
    images = _idx(root / f"{stem}-images-idx3-ubyte.gz", "images")
    labels = _idx(root / f"{stem}-labels-idx1-ubyte.gz", "labels")
    if len(images) != len(labels) or (labels.size and labels.max() >= len(CLASSES)):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels (or a label > 9)")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


# Image ICL tasks on Fashion-MNIST (``fashion:TASK``; ``fashion-text:TASK`` writes the class
# name as text in the image's place). Answers are functions of the class.
FASHION_TASKS = {
    t.name: t
    for t in [
        DigitTask("name", "name", lambda c: CLASSES[c]),
        DigitTask("category", "name", lambda c: CATEGORY[CLASSES[c]]),
        DigitTask("name_caps", "format", lambda c: CLASSES[c].upper()),
        DigitTask("name_title", "format", lambda c: CLASSES[c][0].upper() + CLASSES[c][1:]),
        DigitTask("plural", "format", lambda c: PLURAL.get(CLASSES[c], CLASSES[c] + "s")),
        DigitTask("first_letter", "format", lambda c: CLASSES[c][0].lower()),
        DigitTask("footwear_AB", "mapping", lambda c: "A" if CATEGORY[CLASSES[c]] == "footwear" else "B"),
        DigitTask("footwear_BA", "mapping", lambda c: "B" if CATEGORY[CLASSES[c]] == "footwear" else "A"),
        DigitTask(
            "category_color",
            "mapping",
            lambda c: {"clothing": "red", "footwear": "blue", "bag": "green"}[CATEGORY[CLASSES[c]]],
        ),
    ]
}
POOL_PER_CLASS = {"train": 200, "test": 50}  # a fixed, class-balanced draw of each split
SPLIT_SEED = 0


def fashion_subset(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``split``, labels): ``POOL_PER_CLASS[split]`` images of each class, seeded."""
    _, labels = fashion_images(split)
    rng = np.random.default_rng(SPLIT_SEED)
    picked = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: POOL_PER_CLASS[split]] for c in range(10)])
    )
    return picked, labels[picked]


def fashion_picture(split: str, index: int) -> Image.Image:
    """Image ``index`` of ``split`` as RGB, light on black as stored (inverting did not change a
    linear probe of DINOv2's features: benchmarks/dino/linear-probes.txt)."""
    images, _ = fashion_images(split)
    return Image.fromarray(images[index], mode="L").convert("RGB")


def fashion_examples(task: str, split: str = "train", kind: str = "fashion") -> list[Example]:
    """The fixed subset of ``split`` as Examples of ``task``: the image (``fashion``) or its class
    name as text (``fashion-text``), answer the task's word for its class."""
    if task not in FASHION_TASKS:
        raise DataError(f"unknown {kind} task {task!r}; choose from {', '.join(FASHION_TASKS)}")
    t, text = FASHION_TASKS[task], kind == "fashion-text"
    indices, labels = fashion_subset(split)
    return [
        Example(
            id=f"{kind}-{task}-{split}-{i}",
            images=[] if text else [fashion_picture(split, int(i))],
            question=CLASSES[c] if text else "",
            answers=[t.answer(int(c))],
            choices=t.vocabulary,
            metadata={"index": int(i), "class": int(c), "task": task, "dataset": f"{kind}:{task}"},
        )
        for i, c in zip(indices, labels)
    ]
