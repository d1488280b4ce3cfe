"""The toy digits tasks: scikit-learn's bundled 8x8 handwritten digits, offline.

A *task* maps a digit class to an answer word. Format tasks each have their own answer
vocabulary; mapping tasks share "A"/"B" and differ only in the mapping, so a model must
combine the task (known only from the demonstrations) with the query image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import StvError
from .example import Example

TEST_PER_CLASS = 60
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitTask:
    """A function of a digit (its answers) that the lab learns in context."""

    name: str
    kind: str  # "format" or "mapping"
    answer: Callable[[int], str]

    @property
    def vocabulary(self) -> list[str]:
        """Every answer this task can give."""
        return sorted({self.answer(c) for c in range(10)})


_NAMES = "zero one two three four five six seven eight nine".split()
DIGIT_TASKS: dict[str, DigitTask] = {
    t.name: t
    for t in [
        DigitTask("digit", "format", lambda c: str(c)),
        DigitTask("letter", "format", lambda c: "abcdefghij"[c]),
        DigitTask("parity_word", "format", lambda c: "even" if c % 2 == 0 else "odd"),
        DigitTask("size_word", "format", lambda c: "small" if c < 5 else "big"),
        DigitTask("parity_AB", "mapping", lambda c: "A" if c % 2 == 0 else "B"),
        DigitTask("parity_AB_flip", "mapping", lambda c: "B" if c % 2 == 0 else "A"),
        DigitTask("big_AB", "mapping", lambda c: "A" if c > 4 else "B"),
        DigitTask("big_AB_flip", "mapping", lambda c: "B" if c > 4 else "A"),
    ]
}
# Tasks for the lab on SmolLM2 (``numbers:TASK``): functions of the digit the pretrained
# language model already computes in text, so in-context learning can come from pretraining.
NUMBER_TASKS: dict[str, DigitTask] = {
    t.name: t
    for t in [
        DigitTask("word", "number", lambda c: _NAMES[c]),
        DigitTask("next", "number", lambda c: str(c + 1)),
        DigitTask("previous", "number", lambda c: str(c - 1)),
        DigitTask("parity", "number", lambda c: "even" if c % 2 == 0 else "odd"),
        DigitTask("size", "number", lambda c: "small" if c < 5 else "big"),
        DigitTask("double", "number", lambda c: str(2 * c)),
        DigitTask("copy", "format", str),
        DigitTask("word_caps", "format", lambda c: _NAMES[c].capitalize()),
    ]
}
# Answer pool for random class->label episodes (pure induction, used in lab training).
RANDOM_LABELS = [f"L{i}" for i in range(16)]


@dataclass
class DigitImages:
    """All 1,797 digits with a fixed, seeded train/test split (TEST_PER_CLASS per class in test)."""

    pixels: np.ndarray  # (n, 8, 8) float in [0, 1]
    labels: np.ndarray  # (n,)
    train: np.ndarray  # indices
    test: np.ndarray

    def image(self, index: int, size: int = 32) -> Image.Image:
        """The digit as an RGB image, upscaled with nearest neighbour (white ink on black)."""
        return _render(int(index), size)


@functools.cache
def digit_images() -> DigitImages:
    """scikit-learn's 8x8 handwritten digits in [0, 1] with labels and a fixed, class-balanced train/test split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = (data.images / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in range(10)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return DigitImages(pixels, labels, np.sort(train), np.sort(test))


@functools.lru_cache(maxsize=8192)
def _render(index: int, size: int) -> Image.Image:
    array = (digit_images().pixels[index] * 255).astype(np.uint8)
    return Image.fromarray(array, mode="L").resize((size, size), Image.NEAREST).convert("RGB")


def digit_examples(task: str, split: str = "train", size: int = 32, kind: str = "digits") -> list[Example]:
    """Every image of ``split`` as an Example of ``task`` (answer = the task's word for its class).

    ``kind``: ``digits`` (the lab's tasks), ``numbers`` (NUMBER_TASKS on images) or
    ``numbers-text`` (the same records with the digit written as text instead of an image)."""
    tasks = DIGIT_TASKS if kind == "digits" else NUMBER_TASKS
    if task not in tasks:
        raise StvError(f"unknown {kind} task {task!r}; choose from {', '.join(tasks)}")
    if split not in ("train", "test"):
        raise StvError(f"{kind} split must be 'train' or 'test', got {split!r}")
    d, t, text = digit_images(), tasks[task], kind == "numbers-text"
    indices = d.train if split == "train" else d.test
    return [
        Example(
            id=f"{kind}-{task}-{i}",
            images=[] if text else [d.image(i, size)],
            question=str(d.labels[i]) if text else "",
            answers=[t.answer(int(d.labels[i]))],
            choices=t.vocabulary,
            metadata={"index": int(i), "class": int(d.labels[i]), "task": task, "dataset": f"{kind}:{task}"},
        )
        for i in indices
    ]
