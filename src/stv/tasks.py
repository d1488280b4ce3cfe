"""Per-dataset prompt templates: how demonstrations and a query become one prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .data.example import Example


@dataclass(frozen=True)
class Task:
    """A prompt template. ``shot`` renders one demonstration, ``query`` the question asked."""

    name: str
    shot: str = "{question} = {answer} "
    query: str = "{question} ="
    instruction: str = ""

    def _pieces(self, example: Example, template: str) -> list:
        """The example's images first, then its text (the MTV layout: <image>{question} Answer:)."""
        text = template.format(question=example.question, answer=example.answer if "{answer}" in template else "")
        return [*example.images, text]

    def prompt(self, demos: Sequence[Example], query: Example) -> list:
        pieces: list = [self.instruction] if self.instruction else []
        for demo in demos:
            pieces += self._pieces(demo, self.shot)
        return pieces + self._pieces(query, self.query)


# The lab's layout: "<img> = ans <img> = ans ... <img> =" (questions are empty).
DIGITS = Task("digits", shot="{question} = {answer} ", query="{question} =")


def sample_demos(pool: Sequence[Example], query: Example, shots: int, rng: np.random.Generator) -> list[Example]:
    """``shots`` demonstrations from ``pool``, never the query itself."""
    if shots == 0:
        return []
    candidates = [i for i in rng.permutation(len(pool))[: shots + 1] if pool[i].id != query.id][:shots]
    if len(candidates) < shots:
        raise ValueError(f"need {shots} demonstrations but the pool has only {len(pool)} examples")
    return [pool[i] for i in candidates]
