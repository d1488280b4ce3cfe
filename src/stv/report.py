"""Tables and plots: sensitivity heatmap, policy curves, accuracy bars, markdown tables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import current_umask


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Atomic PNG write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
    _plt().close(fig)
    return path


def sensitivity_heatmap(sensitivity, path: str | Path, title: str = "head sensitivity (mean ||delta||)",
                        marked: Sequence[tuple[int, int]] = ()) -> Path:
    plt = _plt()
    s = np.asarray(sensitivity)
    fig, ax = plt.subplots(figsize=(max(4, s.shape[1] * 0.35 + 2), max(3, s.shape[0] * 0.3 + 1.5)))
    im = ax.imshow(s, aspect="auto", cmap="viridis")
    for layer, head in marked:
        ax.scatter([head], [layer], marker="s", facecolors="none", edgecolors="red", s=60)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    step = max(1, s.shape[0] // 16), max(1, s.shape[1] // 16)
    ax.set_yticks(range(0, s.shape[0], step[0]))
    ax.set_xticks(range(0, s.shape[1], step[1]))
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def policy_curves(reward: Sequence[float], max_prob: Sequence[float], path: str | Path, title: str = "REINFORCE") -> Path:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    a.plot(reward)
    a.set_xlabel("step")
    a.set_ylabel("mean reward (log p of answer)")
    b.plot(max_prob)
    b.set_xlabel("step")
    b.set_ylabel("mean max probability")
    b.set_ylim(0, 1.02)
    fig.suptitle(title)
    return _save(fig, path)


def accuracy_bars(methods: dict[str, dict[str, list[float]]], path: str | Path, title: str = "accuracy (%)") -> Path:
    plt = _plt()
    names = list(methods)
    tasks = list(next(iter(methods.values())))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, len(tasks) * 2.2), 3.8))
    for i, name in enumerate(names):
        means = [np.mean(methods[name][t]) for t in tasks]
        stds = [np.std(methods[name][t]) for t in tasks]
        ax.bar(np.arange(len(tasks)) + i * width, means, width, yerr=stds, label=name)
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
    ax.set_xticklabels(tasks)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, path)


def results_table(methods: dict[str, dict[str, list[float]]]) -> str:
    """Markdown table of mean ± std (over seeds) per method and task, plus the average."""
    tasks = list(next(iter(methods.values())))
    lines = ["| method | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    for name, per_task in methods.items():
        cells = [f"{np.mean(v):.1f} ± {np.std(v):.1f}" for v in per_task.values()]
        avg = np.mean([np.mean(v) for v in per_task.values()])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg:.1f} |")
    return "\n".join(lines)
