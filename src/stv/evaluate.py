"""Run a method over examples and score it."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .config import Policy
from .data.example import Example
from .errors import SettingsMismatchError
from .io import atomic_write_json, atomic_write_text
from .methods.reward import first_token_ids
from .models import LMM
from .runs.fingerprint import check_settings, clear, data_fingerprint, example_digest, model_identity, note_written
from .tasks import Task, sample_demos, support_demos


def icl_prompts(task: Task, examples: Sequence[Example], pool: Sequence[Example], shots: int, seed: int) -> list:
    """Each example's prompt with ``shots`` demonstrations from ``pool`` (seeded, never the query)."""
    rng = np.random.default_rng(seed)
    return [task.prompt(sample_demos(pool, q, shots, rng), q) for q in examples]


@torch.inference_mode()
def first_token_accuracy(
    lmm: LMM,
    examples: Sequence[Example],
    task: Task,
    pool: Sequence[Example] = (),
    shots: int = 0,
    vectors=None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "eval",
) -> float:
    """% of examples whose answer's first token is the argmax over the *whole* vocabulary.

    ``shots`` demonstrations come from ``pool`` (seeded, never the query); ``vectors`` (a
    TaskVectors or anything with ``apply(lmm)``) are inserted while scoring.
    """
    prompts = icl_prompts(task, examples, pool, shots, seed)
    targets = first_token_ids(lmm, examples, task)
    correct = torch.zeros(())
    dist = distributed.current()
    with vectors.apply(lmm) if vectors is not None else contextlib.nullcontext():
        for _, start, end in tqdm(dist.batches(len(prompts), batch_size), desc=desc, disable=not progress):
            logits = lmm.forward(prompts[start:end])
            correct += (logits.argmax(-1).cpu() == targets[start:end]).sum()
    return 100.0 * float(dist.all_sum(correct)) / max(1, len(examples))


@torch.inference_mode()
def generation_accuracy(
    lmm: LMM,
    examples: Sequence[Example],
    task: Task,
    pool: Sequence[Example] = (),
    shots: int = 0,
    vectors=None,
    seed: int = 0,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    policy: Policy | None = None,
) -> tuple[float, float]:
    """(first-token %, task-metric % of the generated answers) from one greedy generation.

    The first generated token is the argmax after the prompt, so it gives the same
    first-token accuracy as :func:`first_token_accuracy`; the rest gives the exact match."""
    rows = generation_rows(lmm, examples, task, pool, shots, vectors, seed, batch_size, max_new_tokens, policy)
    first = sum(r["first_token_correct"] for r in rows)
    accuracy = task.score(examples, {r["question_id"]: r["answer"] for r in rows})["accuracy"]
    return 100.0 * first / max(1, len(examples)), accuracy


@torch.inference_mode()
def generation_rows(
    lmm: LMM,
    examples: Sequence[Example],
    task: Task,
    pool: Sequence[Example] = (),
    shots: int = 0,
    vectors=None,
    seed: int = 0,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    policy: Policy | None = None,
) -> list[dict]:
    """:func:`answer_rows` of every example, in batches, with ``shots`` demonstrations from
    ``pool`` or ``vectors`` inserted: what :func:`generation_accuracy` scores, per query."""
    prompts = icl_prompts(task, examples, pool, shots, seed)
    targets = first_token_ids(lmm, examples, task)
    rows = []
    with vectors.apply(lmm, policy) if vectors is not None else contextlib.nullcontext():
        for start in range(0, len(prompts), batch_size):
            rows += answer_rows(
                lmm,
                task,
                examples[start : start + batch_size],
                prompts[start : start + batch_size],
                targets[start : start + batch_size].tolist(),
                max_new_tokens,
            )
    return rows


def answer_rows(
    lmm: LMM, task: Task, examples: Sequence[Example], prompts: Sequence, first_ids: Sequence[int], max_new_tokens: int
) -> list[dict]:
    """One greedy generation for a batch: per example its post-processed answer, the raw text
    and whether the first generated token is the answer's first token (``first_ids``)."""
    ids = lmm.generate_ids(prompts, max_new_tokens=max_new_tokens)
    return [
        {"question_id": e.id, "answer": task.postprocess(text), "raw": text, "first_token_correct": token == want}
        for e, text, token, want in zip(examples, lmm.decode(ids), ids[:, 0].tolist(), first_ids)
    ]


def eval_settings(
    lmm: LMM,
    examples: Sequence[Example],
    task: Task,
    pool: Sequence[Example],
    shots: int,
    vectors,
    seed: int,
    max_new_tokens: int,
    policy: Policy | None,
) -> dict:
    """Everything an eval folder's predictions depend on (not the number of examples: a
    prediction is per question, and a subset of the same settings reuses them)."""
    from .version import stv_version

    return {
        "kind": "eval",
        **model_identity(lmm),
        "dataset": examples[0].metadata.get("dataset") if examples else None,
        "pool": data_fingerprint(pool) if shots > 0 else None,
        "shots": shots,
        "seed": seed,
        "vectors": vectors.fingerprint() if vectors is not None else None,
        "policy": None if vectors is None else (policy or vectors.config.policy),
        "task": asdict(task),
        "max_new_tokens": max_new_tokens,
        "stv_version": stv_version(),
    }


def run_eval(
    lmm: LMM,
    examples: Sequence[Example],
    task: Task,
    out: str | Path,
    pool: Sequence[Example] = (),
    shots: int = 0,
    vectors=None,
    seed: int = 0,
    batch_size: int = 8,
    max_new_tokens: int = 20,
    progress: bool = True,
    policy: Policy | None = None,
    recompute: bool = False,
    scores_name: str = "scores.json",
    settings: dict | None = None,
) -> dict:
    """Greedy answers for every example, appended to ``out/predictions.jsonl`` batch by batch
    (a killed run resumes after the last written batch), then ``out/{scores_name}``.

    ``out/settings.json`` records what the predictions depend on (:func:`eval_settings` plus
    ``settings``); a folder holding other settings is refused (``recompute``: cleared first).
    Earlier predictions of other examples are kept, never deleted, so a smaller subset only
    scores itself. ``scores["accuracy"]`` is the task's metric over the generated answers;
    ``scores["first_token_accuracy"]`` is the % whose first generated token is the answer's
    first token, from the same generation. ``policy`` is the insertion schedule of
    ``vectors`` (default: the one they were fitted with)."""
    out = Path(out)
    dist = distributed.current()
    if dist.is_main and recompute:
        clear(out, ["predictions.jsonl", "predictions.rank*.jsonl", "scores.json", "scores-limit*.json"])
    dist.barrier()
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **eval_settings(lmm, examples, task, pool, shots, vectors, seed, max_new_tokens, policy),
        **(settings or {}),
    }
    if dist.is_main:
        check_settings(out, record, "eval predictions")
    dist.barrier()
    pred_file, part_file, done = _resumed(out, dist)
    _check_same_data(out, examples, done)
    if dist.is_main:
        ranks = [f"predictions.rank{r}.jsonl" for r in range(dist.world)] if dist.enabled else []
        note_written(out, pred_file.name, scores_name, *ranks)
    rng = np.random.default_rng(seed)
    demos = {e.id: (support_demos(e) if shots < 0 else sample_demos(pool, e, shots, rng)) for e in examples}
    todo = [e for e in examples if e.id not in done]
    if todo:  # the longest prompt fails now (e.g. too many positions), before any output or progress bar
        longest = max(todo, key=lambda e: (len(demos[e.id]), len(e.images), len(e.question)))
        lmm.prepare([task.prompt(demos[longest.id], longest)])
    mine = dist.batches(len(todo), batch_size)
    first = dict(zip([e.id for e in todo], first_token_ids(lmm, todo, task).tolist())) if todo else {}
    inserted = vectors.apply(lmm, policy) if vectors is not None else contextlib.nullcontext()
    with inserted, open(part_file, "a") as f:
        for _, start, end in tqdm(mine, desc="eval", disable=not progress or not dist.is_main):
            batch = todo[start:end]
            prompts = [task.prompt(demos[e.id], e) for e in batch]
            rows = answer_rows(lmm, task, batch, prompts, [first[e.id] for e in batch], max_new_tokens)
            for e, row in zip(batch, rows):
                row["example"] = example_digest(e)  # what it answered: an edited record is not reused
                done[row["question_id"]] = row
                f.write(json.dumps(row) + "\n")
            f.flush()
    if dist.enabled:
        for part in dist.gather({k: done[k] for k in (e.id for _, s, t in mine for e in todo[s:t])}):
            done.update(part)
    scores = _scores(task, examples, done, shots, record["policy"])
    if dist.is_main:
        _write_predictions(pred_file, examples, done)
        atomic_write_json(out / scores_name, scores)
    dist.barrier()
    return scores


def _resumed(out: Path, dist: distributed.Dist) -> tuple[Path, Path, dict[str, dict]]:
    """(the predictions file, the file this rank appends to, every prediction written so far):
    a run killed mid-batch resumes after its last whole line."""
    pred_file = out / "predictions.jsonl"
    part_file = out / f"predictions.rank{dist.rank}.jsonl" if dist.enabled else pred_file
    done: dict[str, dict] = {}
    for earlier in [pred_file, *sorted(out.glob("predictions.rank*.jsonl"))]:
        done.update(_read_predictions(earlier))
    if part_file.is_file():  # drop a line cut by a kill
        _write_jsonl(part_file, _read_predictions(part_file).values())
    dist.barrier()
    return pred_file, part_file, done


def _check_same_data(out: Path, examples: Sequence[Example], done: dict[str, dict]) -> None:
    """Refuse predictions of records whose content changed since (same id, other question or
    answers); a prediction written before records were hashed is made again."""
    for e in examples:
        row = done.get(e.id)
        if row is None:
            continue
        if "example" not in row:
            del done[e.id]
        elif row["example"] != example_digest(e):
            raise SettingsMismatchError(
                f"{out} holds a prediction for {e.id!r} made when that record held other content (the data file "
                "changed); pass --out NEW for a new folder, or --recompute to replace them"
            )


def _write_predictions(pred_file: Path, examples: Sequence[Example], done: dict[str, dict]) -> None:
    """One predictions file: this subset first, then every earlier prediction (nothing is
    dropped); the ranks' partial files go."""
    asked = {e.id for e in examples}
    rows = [done[e.id] for e in examples] + [r for k, r in done.items() if k not in asked]
    _write_jsonl(pred_file, rows)
    for rank_file in pred_file.parent.glob("predictions.rank*.jsonl"):
        rank_file.unlink()


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """``rows`` (dicts) as one JSON line each, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _scores(task: Task, examples: Sequence[Example], done: dict[str, dict], shots: int, policy) -> dict:
    scores = task.score(examples, {e.id: done[e.id]["answer"] for e in examples})
    flags = [done[e.id].get("first_token_correct") for e in examples]
    if None not in flags:
        scores["first_token_accuracy"] = 100.0 * sum(bool(f) for f in flags) / max(1, len(flags))
    scores.update({"shots": shots, "task": task.name, "n": len(examples), "metric": task.metric, "policy": policy})
    return scores


def _read_predictions(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
            rows[row["question_id"]] = row
    return rows
