"""One table from `stv compare` folders run as one process per seed (benchmarks/cost-smollm2/seedN):
every (task, seed) unit found, mean ± std over seeds, with the cost columns.

    python benchmarks/cost_table.py benchmarks/cost-smollm2 > benchmarks/cost-smollm2/RESULTS.md
"""

import json
import sys
from pathlib import Path

from stv.experiments.compare import compare_table, write_compare


def merged(root: Path) -> dict:
    """Rows of every unit under ``root/*/units`` and the tasks and seeds they cover."""
    rows, tasks, seeds = [], [], []
    for unit in sorted(root.glob("*/units/*.json")):
        data = json.loads(unit.read_text())
        rows += data["rows"]
        tasks += [data["task"]] if data["task"] not in tasks else []
        seeds += [data["seed"]] if data["seed"] not in seeds else []
    order = ["capitalize", "lowercase_first_letter", "present-past", "choose_first_of_5"]
    tasks = sorted(tasks, key=lambda t: order.index(t) if t in order else len(order))
    return {"rows": rows, "tasks": tasks, "seeds": sorted(seeds)}


if __name__ == "__main__":
    result = merged(Path(sys.argv[1]))
    write_compare({**result, "model": "smollm2-135m"}, sys.argv[1])  # compare.md, front_*.png over every seed
    units = {(r["task"], r["seed"]) for r in result["rows"]}
    print(f"SmolLM2-135M, seeds {result['seeds']}, {len(units)} (task, seed) units; mean ± std over seeds.\n")
    for metric in ("first_token", "exact_match"):
        print(f"## {metric.replace('_', ' ')} (%)\n\n{compare_table(result, metric)}\n")
