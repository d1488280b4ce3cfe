"""The command line's arguments: --config files, which of a file and a flag wins, help text."""

from __future__ import annotations

import json

from stv.cli.config_file import expand_config
from stv.cli.parser import build_parser


def _parse(argv: list[str]):
    parser = build_parser()
    return parser.parse_args(expand_config(argv, parser))


def test_paper_configs_parse_for_fit_and_eval():
    from pathlib import Path

    parser = build_parser()
    files = sorted(Path(__file__).parents[1].joinpath("configs", "paper").glob("*.json"))
    assert len(files) == 10
    for path in files:
        fit_args = parser.parse_args(expand_config(["fit", "--config", str(path)], parser))
        eval_args = parser.parse_args(expand_config(["eval", "--config", str(path), "--limit", "3"], parser))
        assert fit_args.top_k == 64 and fit_args.clusters == 32 and fit_args.shots == 4 and fit_args.steps == 600
        assert eval_args.shots == 0 and eval_args.vectors == fit_args.out and eval_args.limit == 3
        assert eval_args.out != fit_args.out  # eval never writes into the vectors folder
        assert fit_args.variant == "paper"  # the paper's cells reproduce the paper's method


def test_a_flag_beats_the_config_file_and_false_turns_a_preset_off(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(
        json.dumps({"top_k": 7, "keep_arm": False, "steps": 9, "fit": {"clusters": 5}, "eval": {"limit": 2}})
    )
    args = _parse(["fit", "--dataset", "digits:parity", "--out", "o", "--config", str(path), "--top-k", "3"])
    assert args.top_k == 3  # the command line wins
    assert args.steps == 9 and args.clusters == 5  # the file fills the rest; the fit section applies to fit
    assert args.keep_arm is False  # stv+ keeps heads by default; the file's false turns it off
    assert not hasattr(args, "limit")  # the eval section does not leak into fit
    plain = _parse(["fit", "--dataset", "digits:parity", "--out", "o"])
    assert plain.keep_arm is None and plain.top_k is None  # unset: the preset decides


def test_every_flag_has_help():
    parser = build_parser()
    for name, command in parser.commands.items():
        for action in command.options:
            if action.dest != "help":
                assert action.help, f"stv {name} {action.option_strings[0]} has no help"
