"""The ``stv`` sub-commands that run experiments: demo, compare, bench and the labs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import StvError
from ..io import atomic_write_json, atomic_write_text
from .common import model_from_args


def _cmd_demo(args) -> int:
    from ..experiments.demo import DemoConfig, run_demo
    from ..report import results_table

    if args.model:
        config = DemoConfig.real(args.model, quick=args.quick)
    else:
        config = DemoConfig.quick() if args.quick else DemoConfig()
    if args.seed is not None:
        config.seeds = (args.seed,)
    out = args.out or ("runs/demo" if not args.model else f"runs/demo-{Path(args.model).name}")
    if args.report_only and args.recompute:
        raise StvError("--report-only rewrites the report from --out's units and --recompute deletes them; pass one")
    if args.jobs < 0:
        raise StvError(f"--jobs {args.jobs}: give a number of processes >= 1 (0: the default)")
    summary = run_demo(out, config, recompute=args.recompute, report_only=args.report_only, jobs=args.jobs)
    for metric, per_method in summary["results"].items():
        print(f"\n{summary['metric'][metric]}\n{results_table(per_method, summary.get('costs'))}")
    args.out = out
    print(f"\nwrote {args.out}/results.json, report.md and plots ({summary['wall_seconds']} s this run)")
    return 0


def _cmd_compare(args) -> int:
    from ..config import default_top_k
    from ..experiments.compare import compare_settings, compare_table, fv_task, prepare_compare_folder, run_compare
    from ..experiments.variants import variant_config
    from ..methods.fit import STVConfig

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise StvError(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 0,1,2") from None
    for name in variants:
        variant_config(name, STVConfig())  # an unknown name fails before the model loads
    for task in tasks:
        fv_task(task, args.test_per_task)  # so does an unknown task
    base = STVConfig.paper(
        top_k=args.top_k or 0,  # 0: each variant's own default for this model
        clusters=args.clusters,
        pairs=args.pairs,
        shots=args.context_shots,
        steps=args.steps,
        samples=args.samples,
        batch_size=args.batch_size,
    )
    run = {"test_per_task": args.test_per_task, "icl_shots": 10, "max_new_tokens": 8, "mtv_steps": args.mtv_steps}
    run["mtv_extras"] = args.mtv_extras
    prepare_compare_folder(args.out, compare_settings(None, variants, base, **run), args.recompute)  # before loading
    lmm = model_from_args(args)
    heads = lmm.heads.num_layers * lmm.heads.num_heads
    if not base.top_k and variants:
        print(
            f"--top-k not given: each variant takes its preset's K ({default_top_k(heads, True)} of {heads} heads "
            f"with a keep arm, {default_top_k(heads, False)} without)",
            file=sys.stderr,
        )
    result = run_compare(lmm, tasks, seeds, variants, base, **run, out=args.out, recompute=args.recompute)
    for metric in ("first_token", "exact_match"):
        print(f"\n{metric} (%)\n{compare_table(result, metric)}")
    print(f"\nwrote {args.out}/compare.json and compare.md")
    return 0


def _cmd_bench(args) -> int:
    from ..experiments.bench import run_all

    data = None
    if args.device == "cpu" and not args.tiny:
        lines = run_all(quick=args.quick, only=args.only)
    else:
        from ..checks import device_available
        from ..experiments.bench_gpu import run_gpu
        from ..testing.shapes import SHAPES

        shapes = [s for s in args.shapes.split(",") if s]
        unknown = [s for s in shapes if s not in SHAPES]
        if unknown or not shapes:
            raise StvError(
                f"--shapes {args.shapes}: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(SHAPES)}"
            )
        device_available(args.device)
        lines, data = run_gpu(shapes, args.device, tiny=args.tiny, profile=not args.no_profile)
    if args.write:
        path = atomic_write_text(args.write, "\n".join(lines) + "\n")
        print(f"\nwrote {path}")
        if data is not None:
            print(f"wrote {atomic_write_json(Path(args.write).with_suffix('.json'), data)}")
    return 0


def _cmd_lab(args) -> int:
    if args.backbone:
        return _cmd_lab_smol(args)
    from ..experiments.lab import LAB_CHECKPOINT, load_lab
    from ..experiments.lab.curve import format_curve, icl_curve, save_curve

    per_task = getattr(args, "per_task", None) or 200
    if args.lab_command == "train":
        from ..experiments.lab.train import LabConfig, train_lab

        cfg = LabConfig(seed=args.seed, steps=args.steps) if args.steps else LabConfig(seed=args.seed)
        result = train_lab(args.out, cfg)
        curve = icl_curve(load_lab(args.out), per_task=per_task)
        save_curve(curve, args.out)
        print(format_curve(curve))
        print(f"\ntrained in {result['train_seconds']} s; wrote {args.out}")
    elif args.lab_command == "info":
        path = Path(args.checkpoint or LAB_CHECKPOINT) / "icl_curve.json"
        if not path.is_file():
            raise StvError(f"no ICL curve at {path}; run `stv lab curve`")
        print(format_curve(json.loads(path.read_text())))
    else:
        curve = icl_curve(load_lab(args.checkpoint), per_task=per_task)
        print(format_curve(curve))
    return 0


def _cmd_lab_smol(args) -> int:
    """The labs on SmolLM2: train the tower (or lab-dino's projector), or print / recompute
    their image and text ICL curves."""
    from ..experiments.lab import dino_model, smol
    from ..experiments.lab.curve import format_number_curve, number_curve

    dino = args.backbone == "dino"
    shipped = dino_model.PROJECTOR if dino else smol.TOWER
    folder = Path(getattr(args, "out", None) or getattr(args, "checkpoint", None) or shipped)
    if args.lab_command == "info":
        path = folder / "icl_curve.json"
        if not path.is_file():
            raise StvError(f"no ICL curve at {path}; run `stv lab curve --backbone {args.backbone}`")
        curves = json.loads(path.read_text())
    else:
        if args.lab_command == "train" and dino:
            from ..experiments.lab.dino_align import DinoAlignConfig, train_projector

            make = DinoAlignConfig.caption if args.objective == "caption" else DinoAlignConfig
            dino_cfg = make(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
            result = train_projector(folder, dino_cfg)
            print(
                f"trained in {result['train_seconds']} s; test images named: {result['names_test_images']}, "
                f"read as their word: {result['reads_as_word']}"
            )
        elif args.lab_command == "train":
            from ..experiments.lab.align import AlignConfig, train_tower

            cfg = AlignConfig(
                steps=args.steps or AlignConfig.steps,
                embed_weight=args.embed_weight,
                distill_weight=args.distill_weight,
                seed=args.seed,
            )
            result = train_tower(folder, cfg)
            print(f"trained in {result['train_seconds']} s; image read as its digit: {result['reads_as_digit']}")
        lmm = dino_model.load_projector(folder) if dino else smol.load_tower(folder)
        per_task = args.per_task or 60
        kind = "fashion" if dino else "numbers"
        curves = {
            "image": number_curve(lmm, kind, per_task=per_task),
            "text": number_curve(lmm, f"{kind}-text", per_task=per_task),
        }
        atomic_write_json(folder / "icl_curve.json", curves)
    for kind, curve in curves.items():
        print(f"\n{kind} ({curve['kind']}:TASK, first token / exact match %, {curve['per_task']} test queries)")
        print(format_number_curve(curve))
    return 0
