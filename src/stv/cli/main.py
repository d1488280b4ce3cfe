"""The ``stv`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..config import default_top_k
from ..errors import StvError
from ..io import atomic_write_json
from .common import (
    dataset_from_args,
    distributed_module,
    lora_config_from_args,
    model_from_args,
    quiet_transformers,
    stv_config_from_args,
)
from .config_file import expand_config
from .parser import build_parser
from .runs import _cmd_bench, _cmd_compare, _cmd_demo, _cmd_lab

__all__ = ["build_parser", "expand_config", "main"]


def _cmd_inspect(args) -> int:
    args.model = args.model or args.name
    lmm = model_from_args(args)
    h = lmm.heads
    print(
        json.dumps(
            {
                "model": str(lmm.name),
                "family": lmm.family,
                "class": type(lmm.model).__name__,
                "processor": type(lmm.processor).__name__,
                "layers": h.num_layers,
                "heads": h.num_heads,
                "head_dim": h.head_dim,
                "multimodal": lmm.is_multimodal,
            },
            indent=2,
        )
    )
    return 0


def _cmd_models(args) -> int:
    from ..models.named import NAMED
    from ..models.registry import registered_models

    for m in NAMED.values():
        state = "installed" if m.installed() else f"not installed: {m.pip}"
        print(f"{m.name:14s} {m.description}\n{'':14s} {state}")
    for r in registered_models().values():
        print(f"{r.name:14s} {r.description}\n{'':14s} {r.available()}")
    return 0


def _cmd_families(args) -> int:
    from ..testing import FAMILIES

    print("\n".join(FAMILIES))
    return 0


def _cmd_scan(args) -> int:
    import numpy as np

    from .. import report
    from ..checks import removed_on_error, writable_folder
    from ..methods.fit import scan_pairs
    from ..methods.scan import SENSITIVITIES, sensitivity_scan
    from ..runs.fingerprint import check_settings
    from ..runs.folder import fit_settings

    out = writable_folder(args.out)
    cfg = stv_config_from_args(args)
    cfg.check(scan_only=True)
    train, task = dataset_from_args(args, args.train_split)
    lmm = model_from_args(args)
    pairs = scan_pairs(train, task, cfg.pairs, cfg.shots, np.random.default_rng(cfg.seed))
    settings = fit_settings(lmm, train, task, "scan", cfg, args.dataset)
    settings["config"] = {k: settings["config"][k] for k in ("pairs", "shots", "seed")}  # what the scan depends on
    with removed_on_error(out):
        out.mkdir(parents=True, exist_ok=True)
        check_settings(out, settings, "a sensitivity scan")
        scan = sensitivity_scan(lmm, pairs, cfg.batch_size, workdir=out, key=json.dumps(settings, sort_keys=True))
    heads = lmm.heads.num_layers * lmm.heads.num_heads
    top = scan.top_k(cfg.top_k or default_top_k(heads, keep_arm=False), cfg.sensitivity)  # all heads would mark nothing
    if not distributed_module().current().is_main:
        return 0
    atomic_write_json(
        out / "sensitivity.json",
        {
            "sensitivity": scan.sensitivity.tolist(),
            "ranking": cfg.sensitivity,
            "scores": scan.scores(cfg.sensitivity).tolist(),
            "top_k": top,
            "maps": {k: scan.scores(k).tolist() for k in SENSITIVITIES},
        },
        indent=None,
    )
    report.sensitivity_heatmap(scan.scores(cfg.sensitivity), out / "sensitivity.png", marked=top)
    print(json.dumps({"top_k": top[:10], "out": str(out)}))
    return 0


def _cmd_fit(args) -> int:
    from ..checks import removed_on_error, writable_folder
    from ..runs.folder import fit_into

    out = writable_folder(args.out)
    cfg = stv_config_from_args(args)
    cfg.check()
    lora = lora_config_from_args(args, cfg.seed) if args.method == "lora" else None  # checked before the model loads
    train, task = dataset_from_args(args, args.train_split)
    lmm = model_from_args(args)
    if not args.top_k and args.method == "stv":  # both presets leave K at 0: chosen from the model
        cfg = cfg.resolved(lmm)
        heads = lmm.heads.num_layers * lmm.heads.num_heads
        print(f"--top-k not given: using K = {cfg.top_k} of the model's {heads} heads", file=sys.stderr)
    with removed_on_error(out):
        summary = fit_into(
            out, lmm, train, task, cfg, args.method, args.dataset, args.train_split, args.recompute, lora=lora
        )
    if summary is None:
        print(f"{out} already holds a fit ({args.method}) with these settings; pass --recompute to fit again")
    elif distributed_module().current().is_main:
        print(json.dumps(summary))
    return 0


def _cmd_eval(args) -> int:
    from ..checks import at_least, default_eval_folder, not_a_vectors_folder, removed_on_error, writable_folder
    from ..evaluate import first_token_accuracy, run_eval
    from ..methods.lora import load_fitted

    at_least(args.shots, -1, "--shots")
    at_least(args.limit, 1, "--limit")
    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.max_new_tokens, 1, "--max-new-tokens")
    out = (
        Path(args.out)
        if args.out
        else default_eval_folder(args.model, args.dataset, args.split, args.shots, args.vectors, args.seed, args.policy)
    )
    writable_folder(out)
    not_a_vectors_folder(out)
    examples, task = dataset_from_args(args, args.split)
    pool = dataset_from_args(args, args.train_split)[0] if args.shots > 0 else []
    examples = examples[: args.limit] if args.limit else examples
    vectors = load_fitted(args.vectors) if args.vectors else None  # task vectors or a LoRA adapter
    lmm = model_from_args(args)
    if vectors is not None:
        vectors.allow_other_weights = args.allow_other_weights
        vectors.check_model(lmm)
    info = {
        "n": len(examples),
        "shots": args.shots,
        "vectors": args.vectors,
        "dataset": args.dataset,
        "split": args.split,
    }
    if args.first_token:
        acc = first_token_accuracy(lmm, examples, task, pool, args.shots, vectors, seed=args.seed, progress=True)
        if distributed_module().current().is_main:
            print(json.dumps({"accuracy": round(acc, 2), "metric": "first-token", **info}))
        return 0
    with removed_on_error(out):
        scores = run_eval(
            lmm,
            examples,
            task,
            out,
            pool,
            args.shots,
            vectors,
            seed=args.seed,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            policy=args.policy,
            recompute=args.recompute,
            settings={"split": args.split},
            scores_name=f"scores-limit{args.limit}.json" if args.limit else "scores.json",
        )
    if distributed_module().current().is_main:
        extra = (
            {"first_token_accuracy": round(scores["first_token_accuracy"], 2)}
            if "first_token_accuracy" in scores
            else {}
        )
        print(
            json.dumps(
                {
                    "accuracy": round(scores["accuracy"], 2),
                    "metric": task.metric,
                    **extra,
                    "out": str(out),
                    "policy": scores["policy"],
                    **info,
                }
            )
        )
    return 0


def _read_records(path: str, flag: str) -> list[dict]:
    """The records of a JSON list (or object holding "annotations"/"questions") or a JSONL file."""
    file = Path(path)
    if not file.is_file():
        raise StvError(f"{flag} {path}: no such file")
    text = file.read_text()
    try:
        data = json.loads(text)
        records = data if isinstance(data, list) else data.get("annotations") or data.get("questions") or [data]
    except json.JSONDecodeError:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise StvError(f"{flag} {path}:{n} is not valid JSON ({err.msg})") from None
    except AttributeError:
        raise StvError(f"{flag} {path} holds a JSON {type(data).__name__}; give a list of records") from None
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise StvError(f"{flag} {path}: record {bad} is not a JSON object")
    return records


def _cmd_score(args) -> int:
    from ..metrics import score

    def qid(r: dict) -> str:
        return str(r.get("question_id", r.get("image")))

    preds: dict[str, str] = {}
    for r in _read_records(args.predictions, "--predictions"):
        if "answer" not in r or not isinstance(r["answer"], str):
            raise StvError(f"--predictions {args.predictions}: the record of {qid(r)!r} needs a string 'answer'")
        if qid(r) in preds:
            raise StvError(
                f"--predictions {args.predictions}: {qid(r)!r} is predicted twice; keep one prediction per question"
            )
        preds[qid(r)] = r["answer"]
    records = _read_records(args.annotations, "--annotations")

    def answers_of(r: dict) -> list[str]:
        if "answers" not in r and "answer" not in r:
            raise StvError(f"--annotations {args.annotations}: the record of {qid(r)!r} has no 'answers' or 'answer'")
        given = r["answers"] if "answers" in r else [r["answer"]]
        return [a["answer"] if isinstance(a, dict) else a for a in given]

    annotations = {qid(r): answers_of(r) for r in records}
    if args.metric in ("vqa", "vizwiz") and annotations and max(map(len, annotations.values())) < 3:
        print(
            f"warning: --metric {args.metric} gives min(matches / 3, 1) over 10 annotator answers; "
            f"{args.annotations} has at most {max(map(len, annotations.values()))} per question, so a correct "
            "answer scores at most 33%; use --metric choice for single-answer data",
            file=sys.stderr,
        )
    result = score(
        args.metric,
        preds,
        annotations,
        answerable={qid(r): r["answerable"] for r in records if "answerable" in r},
        groups={qid(r): r["answer_type"] for r in records if "answer_type" in r},
    )
    if args.questions:
        asked = {str(q.get("question_id")) for q in _read_records(args.questions, "--questions")}
        extra = set(result["per_question"]) - asked
        if extra:
            raise StvError(f"{len(extra)} annotated questions are not in --questions {args.questions}")
    result.pop("per_question", None)
    print(json.dumps(result, indent=1))
    return 0


COMMANDS = {
    "demo": _cmd_demo,
    "fit": _cmd_fit,
    "scan": _cmd_scan,
    "eval": _cmd_eval,
    "score": _cmd_score,
    "lab": _cmd_lab,
    "compare": _cmd_compare,
    "bench": _cmd_bench,
    "inspect": _cmd_inspect,
    "models": _cmd_models,
    "families": _cmd_families,
}


def main(argv: list[str] | None = None) -> int:
    """The ``stv`` command: exit code 0, or 2 with one line on stderr for a user error."""
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(expand_config(list(sys.argv[1:] if argv is None else argv), parser))
        if not getattr(args, "command", None):
            parser.print_help()
            return 0
        quiet_transformers()
        return COMMANDS[args.command](args)
    except (StvError, FileNotFoundError) as err:
        if os.environ.get("STV_DEBUG"):
            raise  # the full traceback, for bug reports
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("STV_DEBUG"):
            raise
        out = getattr(args, "out", None)
        kept = f"what was written in {out} is kept; " if out else ""
        print(f"\ninterrupted: {kept}run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
