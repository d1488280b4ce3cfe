"""The one record every loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Example:
    """One question about zero or more images, with its reference answer(s)."""

    id: str
    images: list[Image.Image]
    question: str
    answers: list[str]
    choices: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The answer used for teacher forcing and demonstrations (the first reference)."""
        return self.answers[0]
