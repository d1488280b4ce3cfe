"""Fashion-MNIST (Zalando, MIT): 60k / 10k grey 28x28 images of ten clothing classes, read
from its IDX files. Debian ships them (``apt-get install dataset-fashion-mnist``, into
``/usr/share/datasets/fashion-mnist``); ``STV_FASHION_MNIST`` names another folder.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .example import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "apt-get install dataset-fashion-mnist (Debian), or set STV_FASHION_MNIST to a folder of its IDX files"
CLASSES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
CATEGORY = {  # a coarser label: what the item is worn as
    **{c: "clothing" for c in ("T-shirt", "trouser", "pullover", "dress", "coat", "shirt")},
    **{c: "footwear" for c in ("sandal", "sneaker", "ankle boot")},
    "bag": "bag",
}
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
    """(images (N, 28, 28) uint8, labels (N,) in 0-9: ``CLASSES``) of ``split``, train or test."""
    if split not in _FILES:
        raise DataError(f"Fashion-MNIST has the splits train and test, not {split!r}")
    root, stem = fashion_dir(), _FILES[split]
    images = _idx(root / f"{stem}-images-idx3-ubyte.gz", "images")
    labels = _idx(root / f"{stem}-labels-idx1-ubyte.gz", "labels")
    if len(images) != len(labels) or (labels.size and labels.max() >= len(CLASSES)):
        raise DataError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels (or a label > 9)")
    return images, labels
