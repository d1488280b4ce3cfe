"""Mean and std over seeds of the probes' result lines ("TASK seed S NAME: first / exact (..."
from refine_probe.py, "TASK seed S NAME: accuracy (..." from lab_variants_probe.py).

    python benchmarks/probe_table.py --grid 30 benchmarks/v8-probe-gemma*.txt   # one model per call

Scores are printed rounded to 0.1; with 30 test queries each is a multiple of 10/3, so they are
put back on that grid (``--grid 30``) before averaging. Std is over seeds (ddof 0, as the README).
"""

import re
import sys
from collections import defaultdict

import numpy as np

LINE = re.compile(r"^(\S+) seed (\d+) (\S+): ([\d.]+)(?: / ([\d.]+))? \(")


def rows(paths: list[str], grid: int | None) -> dict[tuple[str, str], dict[int, tuple[float, ...]]]:
    """(variant, task) -> {seed: scores}; a later line for the same seed replaces an earlier one."""
    table: dict[tuple[str, str], dict[int, tuple[float, ...]]] = defaultdict(dict)
    for path in paths:
        for line in open(path):
            match = LINE.match(line)
            if not match:
                continue
            task, seed, name, *scores = match.groups()
            values = tuple(float(s) for s in scores if s is not None)
            if grid:
                values = tuple(round(v * grid / 100) * 100 / grid for v in values)
            table[(name, task)][int(seed)] = values
    return table


if __name__ == "__main__":
    args = sys.argv[1:]
    grid = None
    if "--grid" in args:
        at = args.index("--grid")
        grid, args = int(args[at + 1]), args[:at] + args[at + 2 :]
    for (name, task), seeds in sorted(rows(args, grid).items()):
        scores = np.array(list(seeds.values()))  # (seeds, metrics)
        means = " / ".join(f"{m:.1f}" for m in scores.mean(0))
        print(f"{name:40s} {task:24s} {means:13s} std {scores[:, 0].std():.1f}  seeds {sorted(seeds)}")
