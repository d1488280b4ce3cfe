"""The ``stv`` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_families(args: argparse.Namespace) -> int:
    from .testing import FAMILIES

    print("\n".join(FAMILIES))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from . import load_model

    lmm = load_model(args.model, heads_pattern=args.heads_pattern)
    h = lmm.heads
    print(json.dumps({"model": args.model, "family": lmm.family, "class": type(lmm.model).__name__,
                      "processor": type(lmm.processor).__name__, "layers": h.num_layers, "heads": h.num_heads,
                      "head_dim": h.head_dim, "multimodal": lmm.is_multimodal}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stv", description="Sensitivity-aware task vectors for many-shot multimodal in-context learning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("inspect", help="load a model (hub id or folder) and print its head layout")
    p.add_argument("model")
    p.add_argument("--heads-pattern", help="module path of each layer's output projection, with {layer}")
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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
