"""Run every benchmark of `stv bench` (add --write FILE to save the markdown).

python benchmarks/run.py [--quick] [--write benchmarks/bench-latest.md]
"""

import sys

from stv.cli.main import main

sys.exit(main(["bench", *sys.argv[1:]]))
