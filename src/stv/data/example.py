"""The one record every loader produces, with images opened only when a prompt needs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

from ..errors import StvError


class DataError(StvError):
    """A dataset file or record is missing or malformed."""


class DataWarning(UserWarning):
    """A dataset that loads but holds something a user should know about."""


def refuse_constant(name: str):
    """``json.loads``' ``parse_constant``: JSON's non-standard NaN and Infinity are not data."""
    raise ValueError(f"{name} is not a value a record can hold")


@dataclass(frozen=True)
class LazyImage:
    """An image file opened on first use; a missing or corrupt file names itself and its record."""

    path: Path
    record: str = ""

    def load(self) -> Image.Image:
        """The image, read from disk now (a missing file is a clear error)."""
        try:
            with Image.open(self.path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise DataError(
                f"image {self.path} of record {self.record!r} does not exist; check the data root"
            ) from None
        except OSError as err:
            raise DataError(
                f"image {self.path} of record {self.record!r} cannot be read ({err}); re-download or remove that record"
            ) from None


@dataclass(frozen=True)
class DatasetImage:
    """Row ``index`` of a Hugging Face dataset's image column, decoded on first use."""

    dataset: Any
    index: int
    column: str = "image"

    def load(self) -> Image.Image:
        """The image, taken from its dataset row now."""
        return self.dataset[self.index][self.column].convert("RGB")


ImageLike = Union[Image.Image, LazyImage, DatasetImage]


@dataclass
class Example:
    """One question about zero or more images, with its reference answer(s)."""

    id: str
    images: list[ImageLike]
    question: str
    answers: list[str]
    choices: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The answer used for teacher forcing and demonstrations (the first reference)."""
        return self.answers[0]

    def pil_images(self) -> list[Image.Image]:
        """The example's images as PIL images (loaded now)."""
        return [im if isinstance(im, Image.Image) else im.load() for im in self.images]
