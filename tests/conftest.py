import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from transformers.utils import logging as hf_logging  # noqa: E402  (after the thread setting)

hf_logging.disable_progress_bar()


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """Build each tiny family once per test session."""
    from stv.testing import build

    cache: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in cache:
            cache[family] = str(build(family, tmp_path_factory.mktemp(family)))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def lmm_of(family_dir):
    import stv

    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = stv.load_model(family_dir(family))
        return cache[family]

    return get


def random_image(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))


# the smallest STV fit the CLI takes: 2 heads, 2 clusters, 4 pairs of 2 shots, 2 REINFORCE steps x 4 samples
TINY_STV_FLAGS = [
    "--top-k",
    "2",
    "--clusters",
    "2",
    "--pairs",
    "4",
    "--context-shots",
    "2",
    "--steps",
    "2",
    "--samples",
    "4",
]


def prompt(lmm, n_images: int, words: str, seed: int = 0):
    """An interleaved prompt with n_images images (text-only models get text only)."""
    if not lmm.is_multimodal:
        return [words + " " + " ".join(["x"] * n_images) + " Answer:"]
    pieces = []
    for i in range(n_images):
        pieces += [f"item {i}:", random_image(seed + i)]
    return pieces + [f" {words} Answer:"]


def text_examples(n: int, seed: int = 0) -> list:
    """n tiny text examples (three letters -> one of four words), for the text-only families."""
    from stv.data import Example

    rng = np.random.default_rng(seed)
    words = ["even", "odd", "small", "big"]
    return [
        Example(
            id=str(i),
            images=[],
            question=" ".join(rng.choice(list("abcdefgh"), 3)),
            answers=[words[i % 4]],
            metadata={"dataset": "digits:text"},
        )
        for i in range(n)
    ]
