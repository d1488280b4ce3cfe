"""Mean and std over seeds of the probes' result lines ("TASK seed S NAME: first / exact (..."
from refine_probe.py, "TASK seed S NAME: accuracy (..." from lab_variants_probe.py).

    python benchmarks/probe_table.py --grid 30 benchmarks/v8-probe-gemma*.txt   # one model per call
    python benchmarks/probe_table.py --steer-margin 2 benchmarks/lab-variants-probe-all.txt ...

``--steer-margin M`` adds the rows of ``stv+:refine_start=all:steer_margin=M`` derived from the
rows of ``stv+`` (``--baseline NAME``: v8's rows under another name) and of ``stv+_all`` (or ``stv+:refine_start=all``) on the same (task, seed):
both draw as v8 does for the search and zero starts, so at the prompt's last token the margin
variant writes exactly what one of them wrote: ``stv+_all``'s vectors where its logged held-out
scores keep steering under the margin, else v8's (``stv.methods.refine._best_start`` decides,
on the logged scores). Derived rows give the first token only: the continuation search that
follows refinement draws as ``stv+_all``'s whichever start wins, so exact match is not v8's.

Scores are printed rounded to 0.1; with 30 test queries each is a multiple of 10/3, so they are
put back on that grid (``--grid 30``) before averaging. Std is over seeds (ddof 0, as the README).
"""

import ast
import re
import sys
from collections import defaultdict

import numpy as np

LINE = re.compile(r"^(\S+) seed (\d+) (\S+): ([\d.]+)(?: / ([\d.]+))? \(")
REFINE = re.compile(r"^(\S+) seed (\d+) (\S+): .*refine (\{.*\})$")
ALL_NAMES = ("stv+_all", "stv+:refine_start=all")


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


def with_steer_margin(table, paths: list[str], margin: int, baseline: str = "stv+", held_out: int = 64) -> None:
    """Add the derived rows of the steer margin ``margin`` to ``table`` (see the docstring);
    ``baseline``: the rows of v8 (``stv+``; files from before v8 was the default name it
    ``stv+_both_answer``)."""
    from stv.methods.refine import _best_start

    logs = {}  # (name, task, seed) -> the refine log's held-out scores per start
    for path in paths:
        for line in open(path):
            match = REFINE.match(line.rstrip("\n"))
            if match and "judged" in match.group(4):
                task, seed, name, log = match.groups()
                logs[(name, task, int(seed))] = ast.literal_eval(log)["judged"]
    derived = f"stv+_all:steer_margin={margin}(derived)"
    for (name, task), seeds in list(table.items()):
        if name not in ALL_NAMES:
            continue
        for seed, scores in seeds.items():
            v8 = table.get((baseline, task), {}).get(seed)
            judged = logs.get((name, task, seed))
            if v8 is None or judged is None:
                continue
            # first token only: where steering loses, the continuation search after refinement
            # still draws as stv+_all's (steering's refinement took its draws), not as v8's
            table[(derived, task)][seed] = (scores if _best_start(judged, margin, held_out) == "steer" else v8)[:1]


def _option(args: list[str], flag: str, convert=int, default=None):
    """(``convert`` of the value after ``flag`` in ``args``, or ``default``; ``args`` without them)."""
    if flag not in args:
        return default, args
    at = args.index(flag)
    return convert(args[at + 1]), args[:at] + args[at + 2 :]


if __name__ == "__main__":
    grid, args = _option(sys.argv[1:], "--grid")
    margin, args = _option(args, "--steer-margin")
    baseline, args = _option(args, "--baseline", str, "stv+")
    table = rows(args, grid)
    if margin is not None:
        with_steer_margin(table, args, margin, baseline)
    for (name, task), seeds in sorted(table.items()):
        scores = np.array(list(seeds.values()))  # (seeds, metrics)
        means = " / ".join(f"{m:.1f}" for m in scores.mean(0))
        print(f"{name:40s} {task:24s} {means:13s} std {scores[:, 0].std():.1f}  seeds {sorted(seeds)}")
