"""Tables and plots: sensitivity heatmap, policy curves, accuracy bars, cost fronts, markdown tables."""

from __future__ import annotations

import gc
import os
import tempfile
from contextlib import contextmanager
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


def sensitivity_heatmap(
    sensitivity,
    path: str | Path,
    title: str = "head sensitivity (mean ||delta||)",
    marked: Sequence[tuple[int, int]] = (),
    label: str = "sensitivity score",
) -> Path:
    """Layers x heads map of the score used to rank heads; the chosen heads are outlined."""
    plt = _plt()
    s = np.asarray(sensitivity)
    fig, ax = plt.subplots(figsize=(max(4, s.shape[1] * 0.35 + 2), max(3, s.shape[0] * 0.3 + 1.5)))
    im = ax.imshow(s, aspect="auto", cmap="viridis", origin="lower")
    if len(marked):
        heads = [h for _, h in marked]
        layers = [layer for layer, _ in marked]
        ax.scatter(
            heads,
            layers,
            marker="s",
            facecolors="none",
            edgecolors="red",
            s=60,
            label=f"chosen heads (top {len(marked)})",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), fontsize=8, frameon=False)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    step = max(1, s.shape[0] // 16), max(1, s.shape[1] // 16)
    ax.set_yticks(range(0, s.shape[0], step[0]))
    ax.set_xticks(range(0, s.shape[1], step[1]))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=label)
    return _save(fig, path)


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return v
    cumulative = np.cumsum(np.insert(v, 0, 0.0))
    ends = np.arange(1, len(v) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def reinforce_curves(
    reward: Sequence[float], max_prob: Sequence[float], path: str | Path, title: str = "REINFORCE"
) -> Path:
    """Mean reward per step (raw, and smoothed over 5% of the steps) and policy confidence."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    window = max(1, len(reward) // 20)
    a.plot(reward, color="0.75", lw=0.8, label="per step")
    a.plot(_smooth(reward, window), color="C0", lw=1.8, label=f"mean of {window} steps")
    a.set_xlabel("step")
    a.set_ylabel("mean reward (log p of answer)")
    a.legend(fontsize=7)
    b.plot(max_prob, color="C1")
    b.set_xlabel("step")
    b.set_ylabel("mean max probability")
    b.set_ylim(0, 1.02)
    fig.suptitle(title)
    return _save(fig, path)


def cost_front(points: dict[str, tuple[float, float]], path: str | Path, title: str, metric: str) -> Path:
    """Accuracy against fit time (log scale), one labelled point per method ({method: (fit
    seconds, accuracy %)}; a method that fits nothing, ICL, is drawn at 1 s), with the front:
    the methods no other beats on both."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    front = [m for m, (t, a) in points.items() if not any(t2 <= t and a2 > a for t2, a2 in points.values())]
    for name, (seconds, accuracy) in points.items():
        on = name in front
        ax.scatter(max(seconds, 1.0), accuracy, s=36 if on else 20, color="C3" if on else "0.45", zorder=3)
        ax.annotate(name, (max(seconds, 1.0), accuracy), textcoords="offset points", xytext=(4, 3), fontsize=7)
    line = sorted((max(points[m][0], 1.0), points[m][1]) for m in front)
    ax.step([t for t, _ in line], [a for _, a in line], where="post", color="C3", linewidth=0.8, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("fit time, s (log scale; methods with no fit at 1 s)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def accuracy_bars(
    methods: dict[str, dict[str, list[float]]],
    path: str | Path,
    title: str = "accuracy (%)",
    chance: float | None = None,
    reference: str | None = None,
) -> Path:
    """Grouped bars (mean over seeds, std as error bars) with value labels; a colour per
    method; ``reference`` (e.g. the ICL method) is drawn as a dashed line per task."""
    plt = _plt()
    names = list(methods)
    tasks = list(next(iter(methods.values())))
    width = 0.84 / len(names)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(names)] if len(names) > 10 else None
    fig, ax = plt.subplots(figsize=(max(7, len(tasks) * len(names) * 0.32 + 2), 4.2))
    for i, name in enumerate(names):
        means = [float(np.mean(methods[name][t])) for t in tasks]
        stds = [float(np.std(methods[name][t])) for t in tasks]
        x = np.arange(len(tasks)) + i * width
        bars = ax.bar(
            x,
            [max(m, 0.4) for m in means],
            width,
            yerr=stds,
            label=name,
            capsize=1.5,
            color=None if colours is None else colours[i],
            edgecolor="0.3",
            linewidth=0.3,
        )
        for bar, m in zip(bars, means):
            ax.text(
                bar.get_x() + bar.get_width() / 2,
                bar.get_height() + 1,
                f"{m:.0f}",
                ha="center",
                va="bottom",
                fontsize=5.5,
                rotation=90,
            )
    if reference in methods:
        for t, task in enumerate(tasks):
            level = float(np.mean(methods[reference][task]))
            ax.hlines(level, t - width / 2, t + 0.84 - width / 2, colors="k", linestyles="dashed", lw=0.8)
        ax.plot([], [], "k--", lw=0.8, label=f"{reference} (reference)")
    if chance is not None:
        ax.axhline(chance, color="0.5", lw=0.8, ls=":", label=f"chance ({chance:.0f}%)")
    ax.set_xticks(np.arange(len(tasks)) + 0.42 - width / 2)
    ax.set_xticklabels(tasks)
    ax.set_ylim(0, 112)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, path)


COST_HEADER = ("fit s", "peak MB", "backward", "numbers used", "eval s")


def results_table(methods: dict[str, dict[str, list[float]]], costs: dict[str, dict] | None = None) -> str:
    """Markdown table of mean ± std (over seeds) per method and task, plus the average, and
    with ``costs`` (method -> fit_s, peak_mb, backward, used, eval_s) the cost columns.
    A single seed shows no ± (there is no spread to report)."""
    tasks = list(next(iter(methods.values())))
    head = ["method", *tasks, "average", *(COST_HEADER if costs else ())]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, per_task in methods.items():
        cells = [
            f"{np.mean(v):.1f}" + (f" ± {np.std(v):.1f}" if len(v) > 1 else "") if v else "-" for v in per_task.values()
        ]
        avg = np.mean([np.mean(v) for v in per_task.values() if v])
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {avg:.1f} |" + (cost_cells(costs.get(name, {})) if costs else "")
        )
    return "\n".join(lines)


def cost_cells(cost: dict) -> str:
    """A method's cost columns (``COST_HEADER``), "-" where it has none (zero-shot and ICL fit nothing)."""
    backward = "-" if "backward" not in cost else "yes" if cost["backward"] else "no"
    used = (
        "-"
        if "used" not in cost
        else f"{cost['used']:.0f}"
        if cost["used"] < 10_000
        else f"{cost['used'] / 1000:.0f} k"
    )
    fit = f"{cost['fit_s']:.1f}" if "fit_s" in cost else "-"
    peak = f"{cost['peak_mb']:.0f}" if "peak_mb" in cost else "-"
    evaluated = f"{cost['eval_s']:.1f}" if "eval_s" in cost else "-"
    return " " + " | ".join([fit, peak, backward, used, evaluated]) + " |"


@contextmanager
def section(title: str, lines: list[str]):
    """Append a markdown section to ``lines`` (and print its title) around the block."""
    print(f"\n## {title}", flush=True)
    lines += ["", f"## {title}", ""]
    yield
    gc.collect()


def table(rows: list[dict], keys: list[str], lines: list[str]) -> None:
    """Append ``rows`` as a markdown table of ``keys`` to ``lines`` and print it."""
    head = "| " + " | ".join(keys) + " |"
    sep = "|" + "---|" * len(keys)
    body = [
        "| " + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows
    ]
    for line in [head, sep, *body]:
        print(line, flush=True)
        lines.append(line)
