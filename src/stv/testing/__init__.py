"""Tiny, randomly initialised but architecturally real models, built offline.

``python -m stv.testing build FAMILY DIR`` writes a model of that family with a working
processor, a tokenizer trained here and a chat template, loadable with ``stv.load_model(DIR)``.
They exist so every code path (hooks, rendering, generate, scoring) runs on the real
transformers classes without downloading anything.
"""

from __future__ import annotations

import argparse

from .families import FAMILIES, build, build_tokenizer
from .gguf import write_tiny_gguf

__all__ = ["FAMILIES", "build", "build_tokenizer", "main", "write_tiny_gguf"]


def main(argv: list[str] | None = None) -> None:
    """``python -m stv.testing list | build FAMILY DIR``."""
    parser = argparse.ArgumentParser(prog="python -m stv.testing", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the family names")
    b = sub.add_parser("build", help="write a tiny model of FAMILY into DIR")
    b.add_argument("family")
    b.add_argument("dir")
    b.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(FAMILIES))
    else:
        print(build(args.family, args.dir, args.seed))
