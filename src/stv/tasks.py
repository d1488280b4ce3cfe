"""Per-dataset prompt templates: how demonstrations and a query become one prompt, what the
model should answer, and how its answer is scored.

Defaults follow MTV's public code (github.com/Brandon3964/MultiModal-Task-Vector): VizWiz has an instruction and
``<image>{question} Answer: {answer}`` shots; OK-VQA has no instruction and no space after
``Answer:`` in its shots; Flowers/CUB/DTD are 2-way multiple choice answered with a letter.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .data.example import Example
from .errors import StvError
from .metrics import Metric

VIZWIZ_INSTRUCTION = (
    "Understand the given examples, then answer the question about the image with a short phrase. "
    "If the question can not be answered, respond unanswerable.\n"
)


@dataclass(frozen=True)
class Task:
    """A prompt template. ``shot`` renders one demonstration, ``query`` the question asked."""

    name: str
    shot: str = "{question} = {answer} "
    query: str = "{question} ="
    instruction: str = ""
    metric: Metric = "exact"
    answer_prefix: str = " "  # what precedes the answer in a shot ("Answer: yes" -> " ")
    first_word: bool = False  # answers are one word: cut the generated line at its first space

    def target(self, example: Example) -> str:
        """What the model should say for ``example`` (teacher forcing, rewards, scoring)."""
        return example.answer

    def postprocess(self, generated: str) -> str:
        """Generated text -> answer: up to the first newline, stripped (no cut at '.', which
        would break "3.5"); cut at the first space too for one-word tasks (``first_word``)."""
        line = generated.split("\n", 1)[0].strip()
        return line.split(" ", 1)[0] if self.first_word else line

    def continuation(self, example: Example) -> str:
        """The answer as it continues the query prompt, for tokenizing the first answer token."""
        return self.answer_prefix + self.target(example)

    def answer_line(self, example: Example) -> str:
        """:meth:`continuation` and the line break that ends it (where :meth:`postprocess`
        cuts): teacher forcing one token past the answer's end."""
        return self.continuation(example) + "\n"

    def score(self, examples: Sequence[Example], predictions: dict[str, str]) -> dict:
        """This task's metric over ``predictions`` (id -> post-processed answer)."""
        from .metrics import score

        exact = self.metric not in ("vqa", "vizwiz")
        scores = score(
            self.metric,
            predictions,
            {e.id: [self.target(e)] if exact else e.answers for e in examples},
            answerable={e.id: e.metadata["answerable"] for e in examples if e.metadata.get("answerable") is not None},
            groups={e.id: str(e.metadata["answer_type"]) for e in examples if e.metadata.get("answer_type")},
        )
        scores.pop("per_question")
        return scores

    def _pieces(self, example: Example, template: str) -> list:
        """The example's images first, then its text (the MTV layout: <image>{question} Answer:)."""
        text = template.format(question=example.question, answer=self.target(example) if "{answer}" in template else "")
        return [*example.pil_images(), text]

    def prompt(self, demos: Sequence[Example], query: Example) -> list:
        """Demonstrations then the query, in this task's layout."""
        pieces: list = [self.instruction] if self.instruction else []
        for demo in demos:
            pieces += self._pieces(demo, self.shot)
        return pieces + self._pieces(query, self.query)


def _coin(key: str) -> bool:
    return hashlib.sha256(key.encode()).digest()[0] % 2 == 0


@dataclass(frozen=True)
class ChoiceTask(Task):
    """2-way multiple choice: "What is the type of X in the image? A.{x} B.{y} ... Answer: A".

    The wrong option is the record's negative (MTV files) or another class chosen from the
    query's id; the order of the two options is a coin flip seeded by the id, so a prompt is
    the same every time it is built.
    """

    suffix: str = "\nAnswer with the option's letter from the given choice directly. Answer:"

    def options(self, example: Example) -> tuple[str, str]:
        """The options of a multiple-choice example."""
        right = example.answer
        if example.choices and len(example.choices) == 2 and right in example.choices:
            wrong = [c for c in example.choices if c != right][0]
        else:
            others = [c for c in (example.choices or []) if c != right]
            if not others:
                raise StvError(f"example {example.id!r} has no other class to offer as the wrong option")
            wrong = others[int(hashlib.sha256(example.id.encode()).hexdigest(), 16) % len(others)]
        return (right, wrong) if _coin(example.id) else (wrong, right)

    def target(self, example: Example) -> str:
        """The option letter the answer is."""
        return "A" if self.options(example)[0] == example.answer else "B"

    def _pieces(self, example: Example, template: str) -> list:
        a, b = self.options(example)
        text = f"{example.question} A.{a} B.{b}{self.suffix}"
        if template is self.shot:
            text += f" {self.target(example)}\n"
        return [*example.pil_images(), text]


TASKS: dict[str, Task] = {
    "digits": Task("digits", shot="{question} = {answer} ", query="{question} =", metric="exact", first_word=True),
    # the SmolLM2 lab: "<image> ->seven\n" (the image stands where "7" would; no space before
    # the answer, so a numeric answer's first token is its first digit, not a space). Of four
    # layouts measured on the text version ("=", ":", " ->", "->"), " ->" learned the most tasks.
    "numbers": Task("numbers", shot="{question} ->{answer}\n", query="{question} ->", metric="exact", answer_prefix=""),
    "vizwiz": Task(
        "vizwiz",
        shot="{question} Answer: {answer}\n",
        query="{question} Answer:",
        instruction=VIZWIZ_INSTRUCTION,
        metric="vizwiz",
    ),
    "okvqa": Task(
        "okvqa", shot="{question} Answer:{answer}\n", query="{question} Answer:", metric="vqa", answer_prefix=""
    ),
    "choice": ChoiceTask("choice", metric="choice"),
    "jsonl": Task("jsonl", shot="{question} Answer: {answer}\n", query="{question} Answer:", metric="vqa"),
}
DIGITS = TASKS["digits"]
TEXT_TEMPLATE = "Q: {input}\nA: {output}"
TEXT_SEPARATOR = "\n\n"
_CHOICE_KINDS = ("dtd", "flowers102", "cub", "mtv")


def text_task(
    template: str = TEXT_TEMPLATE, separator: str = TEXT_SEPARATOR, name: str = "fv", normalize: bool = False
) -> Task:
    """A text ICL template from one demonstration's layout, e.g. ``"Q: {input}\nA: {output}"``.

    Demonstrations are joined by ``separator``; the query is the template up to ``{output}``
    with trailing spaces moved into the answer (``"A:"`` + ``" Paris"``), so the answer's
    first token is the one the model writes after the prompt. Scored by exact match of the
    generated first line (``normalize``: case and whitespace folded)."""
    if template.count("{input}") != 1 or template.count("{output}") != 1 or not template.rstrip().endswith("{output}"):
        raise StvError(f"template {template!r} must contain {{input}} once and end with {{output}}")
    shot = template.replace("{input}", "{question}").replace("{output}", "{answer}")
    query = shot[: shot.index("{answer}")]
    stripped = query.rstrip(" ")
    return Task(
        name,
        shot=shot + separator,
        query=stripped,
        metric="exact_normalized" if normalize else "exact",
        answer_prefix=query[len(stripped) :],
    )


TASKS["fv"] = text_task()


def task_for(dataset: str | Sequence[Example]) -> Task:
    """The prompt template a dataset spec (or examples from ``load_dataset``) uses by default.

    An unknown spec is an error, never a silent fall-back to some other template."""
    if not isinstance(dataset, str):
        if not len(dataset):
            raise StvError("no examples: cannot choose a prompt template for an empty dataset")
        dataset = str(dataset[0].metadata.get("dataset", ""))
    kind, _, rest = dataset.partition(":")
    if kind == "hf":
        kind = rest
    if kind.startswith("digits"):
        return DIGITS
    if kind.startswith(("numbers", "fashion")):  # the labs on SmolLM2: "<image> ->answer"
        return TASKS["numbers"]
    if kind in TASKS:
        return TASKS[kind]
    if kind in _CHOICE_KINDS:
        return TASKS["choice"]
    raise StvError(
        f"no prompt template for dataset {dataset!r}; known: digits:TASK, numbers:TASK, fashion:TASK, fv:TASK, vizwiz, okvqa, "
        f"jsonl, {', '.join(_CHOICE_KINDS)}, hf:NAME of those; or pass a Task (--task) yourself"
    )


def support_demos(query: Example) -> list[Example]:
    """MTV's 1-shot support (one positive, one negative) of a 2-way record, as Examples."""
    out = []
    for i, (image, label) in enumerate(query.metadata.get("support", [])):
        out.append(
            Example(
                id=f"{query.id}-support{i}",
                images=[image],
                question=query.question,
                answers=[label],
                choices=list(query.choices or []),
            )
        )
    return out


def fixed_subset(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """A seeded draw of ``n`` examples kept in their original order: the same held-out queries
    for every method and seed of a comparison."""
    idx = np.random.default_rng(seed).permutation(len(examples))[:n]
    return [examples[i] for i in sorted(idx)]


def sample_demos(pool: Sequence[Example], query: Example, shots: int, rng: np.random.Generator) -> list[Example]:
    """``shots`` demonstrations from ``pool``, never the query itself."""
    if shots == 0:
        return []
    candidates = [i for i in rng.permutation(len(pool))[: shots + 1] if pool[i].id != query.id][:shots]
    if len(candidates) < shots:
        raise StvError(
            f"need {shots} demonstrations but the training pool has only {len(pool)} examples; lower --shots "
            "(or --context-shots for a fit), or use a larger --train-split"
        )
    return [pool[i] for i in candidates]
