"""The ``stv`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path


def _quiet_transformers() -> None:
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _dataset(spec: str, split: str):
    """``digits:TASK`` -> (examples, task template)."""
    from .data import DIGIT_TASKS, digit_examples
    from .tasks import DIGITS

    kind, _, name = spec.partition(":")
    if kind == "digits":
        if name not in DIGIT_TASKS:
            raise SystemExit(f"error: --dataset digits:{name}: unknown task; choose from {', '.join(DIGIT_TASKS)}")
        return digit_examples(name, split), DIGITS
    raise SystemExit(f"error: --dataset {spec!r}: supported now: digits:TASK ({', '.join(DIGIT_TASKS)})")


def _model(args):
    from . import load_model
    from .lab import LAB_CHECKPOINT

    return load_model(args.model or LAB_CHECKPOINT, heads_pattern=getattr(args, "heads_pattern", None),
                      device=getattr(args, "device", None))


def _stv_config(args):
    from .methods.fit import STVConfig

    values = {f.name: getattr(args, f.name) for f in fields(STVConfig) if getattr(args, f.name, None) is not None}
    return STVConfig(**values)


def _cmd_inspect(args) -> int:
    lmm = _model(args)
    h = lmm.heads
    print(json.dumps({"model": str(lmm.name), "family": lmm.family, "class": type(lmm.model).__name__,
                      "processor": type(lmm.processor).__name__, "layers": h.num_layers, "heads": h.num_heads,
                      "head_dim": h.head_dim, "multimodal": lmm.is_multimodal}, indent=2))
    return 0


def _cmd_families(args) -> int:
    from .testing import FAMILIES

    print("\n".join(FAMILIES))
    return 0


def _cmd_scan(args) -> int:
    import numpy as np

    from . import report
    from .methods.fit import scan_pairs
    from .methods.scan import sensitivity_scan

    lmm = _model(args)
    train, task = _dataset(args.dataset, "train")
    cfg = _stv_config(args)
    out = Path(args.out)
    pairs = scan_pairs(train, task, cfg.pairs, cfg.shots, np.random.default_rng(cfg.seed))
    scan = sensitivity_scan(lmm, pairs, cfg.batch_size, workdir=out)
    top = scan.top_k(cfg.top_k)
    (out / "sensitivity.json").write_text(json.dumps({"sensitivity": scan.sensitivity.tolist(), "top_k": top}))
    report.sensitivity_heatmap(scan.sensitivity, out / "sensitivity.png", marked=top)
    print(json.dumps({"top_k": top[:10], "out": str(out)}))
    return 0


def _cmd_fit(args) -> int:
    from . import report
    from .methods.fit import fit

    out = Path(args.out)
    if (out / "task_vectors.safetensors").exists() and not args.recompute:
        print(f"{out} already holds fitted task vectors; pass --recompute to fit again")
        return 0
    lmm = _model(args)
    train, task = _dataset(args.dataset, "train")
    cfg = _stv_config(args)
    start = time.perf_counter()
    vectors, state = fit(lmm, train, cfg, task=task, workdir=out / "scan")
    vectors.save_pretrained(out)
    report.sensitivity_heatmap(state.scan.sensitivity, out / "sensitivity.png", marked=state.locations)
    report.policy_curves(state.policy.reward_curve, state.policy.max_prob_curve, out / "policy.png")
    log = {"stages_seconds": {k: round(v, 3) for k, v in state.timings.items()},
           "total_seconds": round(time.perf_counter() - start, 3), "config": asdict(cfg),
           "locations": state.locations, "reward_curve": state.policy.reward_curve}
    (out / "fit_log.json").write_text(json.dumps(log, indent=1))
    print(json.dumps({"out": str(out), "locations": len(vectors.locations), **log["stages_seconds"]}))
    return 0


def _cmd_eval(args) -> int:
    from .evaluate import first_token_accuracy
    from .vectors import TaskVectors

    lmm = _model(args)
    examples, task = _dataset(args.dataset, args.split)
    pool, _ = _dataset(args.dataset, "train")
    examples = examples[: args.limit] if args.limit else examples
    vectors = TaskVectors.from_pretrained(args.vectors) if args.vectors else None
    acc = first_token_accuracy(lmm, examples, task, pool, args.shots, vectors, seed=args.seed, progress=True)
    print(json.dumps({"accuracy": round(acc, 2), "n": len(examples), "shots": args.shots,
                      "vectors": args.vectors, "dataset": args.dataset, "split": args.split}))
    return 0


def _cmd_demo(args) -> int:
    from .demo import DemoConfig, run_demo
    from .report import results_table

    config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.seed is not None:
        config.seeds = (args.seed,)
    summary = run_demo(args.out, config)
    print(results_table(summary["methods"]))
    print(f"\nwrote {args.out}/results.json, report.md and plots ({summary['wall_seconds']} s)")
    return 0


def _cmd_lab(args) -> int:
    from .lab import LAB_CHECKPOINT, load_lab
    from .lab.curve import format_curve, icl_curve, save_curve

    if args.lab_command == "train":
        from .lab.train import LabConfig, train_lab

        cfg = LabConfig(seed=args.seed, steps=args.steps) if args.steps else LabConfig(seed=args.seed)
        result = train_lab(args.out, cfg)
        curve = icl_curve(load_lab(args.out), per_task=args.per_task)
        save_curve(curve, args.out)
        print(format_curve(curve))
        print(f"\ntrained in {result['train_seconds']} s; wrote {args.out}")
    elif args.lab_command == "info":
        path = Path(args.checkpoint or LAB_CHECKPOINT) / "icl_curve.json"
        if not path.is_file():
            raise SystemExit(f"error: no ICL curve at {path}; run `stv lab curve`")
        print(format_curve(json.loads(path.read_text())))
    else:
        curve = icl_curve(load_lab(args.checkpoint), per_task=args.per_task)
        print(format_curve(curve))
    return 0


def _add_model(p) -> None:
    p.add_argument("--model", help="hub id or folder (default: the bundled lab model)")
    p.add_argument("--heads-pattern", help="module path of each layer's output projection, with {layer}")
    p.add_argument("--device", help="e.g. cuda, cpu (default: cpu)")


def _add_stv(p) -> None:
    from .methods.fit import STVConfig

    for f in fields(STVConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None, dest=f.name)
        else:
            p.add_argument(flag, type=type(f.default), dest=f.name, help=f"default {f.default}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stv", description="Sensitivity-aware task vectors for many-shot multimodal in-context learning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="the whole pipeline on the bundled lab model (zero-shot, ICL, MTV, STV, ablations)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, help="run one seed instead of 0, 1, 2")
    p.add_argument("--quick", action="store_true", help="a one-minute version")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("fit", help="fit STV task vectors; writes the artifact, plots and a stage log into --out")
    _add_model(p)
    p.add_argument("--dataset", required=True, help="digits:TASK")
    p.add_argument("--out", required=True)
    p.add_argument("--recompute", action="store_true", help="fit again even if --out holds vectors")
    _add_stv(p)
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("scan", help="sensitivity scan only: map JSON + heatmap PNG")
    _add_model(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True)
    _add_stv(p)
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser("eval", help="accuracy of zero-shot, k-shot ICL or inserted task vectors")
    _add_model(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--vectors", help="a folder written by `stv fit`")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("lab", help="the lab model: train, info, curve")
    lab = p.add_subparsers(dest="lab_command", required=True)
    t = lab.add_parser("train", help="retrain the lab model (seeded) and write its ICL curve")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int)
    t.add_argument("--per-task", type=int, default=200)
    i = lab.add_parser("info", help="print the stored ICL curve")
    i.add_argument("--checkpoint")
    c = lab.add_parser("curve", help="recompute the ICL curve")
    c.add_argument("--checkpoint")
    c.add_argument("--per-task", type=int, default=200)
    p.set_defaults(func=_cmd_lab)

    p = sub.add_parser("inspect", help="load a model (hub id or folder) and print its head layout")
    _add_model(p)
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("families", help="list the tiny offline model families (python -m stv.testing build)")
    p.set_defaults(func=_cmd_families)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _quiet_transformers()
    from .heads import HeadDiscoveryError
    from .models import ModelLoadError
    from .vectors import ArtifactMismatchError

    try:
        return args.func(args)
    except (ModelLoadError, HeadDiscoveryError, ArtifactMismatchError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
