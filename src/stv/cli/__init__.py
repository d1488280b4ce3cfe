"""The ``stv`` command line: main (entry point and the core commands), parser (flags, no
torch), common (arguments -> model, data, settings), runs (demo, compare, bench, lab)."""

from .main import main

__all__ = ["main"]
