"""What a fit costs: wall time and peak memory while it runs, and the numbers it stores.

Peak memory is the process's resident set (RSS) sampled every 20 ms during the block on CPU
(the model's own weights included: what a user needs free), and
``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

_STATUS = Path("/proc/self/status")


@dataclass
class Cost:
    """Filled in when the ``measured()`` block ends."""

    seconds: float = 0.0
    peak_mb: float = 0.0
    memory: str = "rss"  # "rss" (CPU resident set) or "cuda" (max allocated on the GPU)

    def as_dict(self) -> dict:
        """The JSON form kept in fit logs and result rows."""
        return {"fit_s": round(self.seconds, 1), "peak_mb": round(self.peak_mb), "memory": self.memory}


def rss_mb() -> float:
    """The process's resident set now (MiB); the lifetime peak where /proc is missing."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


@contextlib.contextmanager
def measured(device: torch.device | str = "cpu") -> Iterator[Cost]:
    """Time the block and track its peak memory (see the module's docstring)."""
    cost = Cost(memory="cuda" if torch.device(device).type == "cuda" else "rss")
    stop = threading.Event()
    peak = [rss_mb()]

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss_mb())

    if cost.memory == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds = time.perf_counter() - start
        stop.set()
        if cost.memory == "cuda":
            cost.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            cost.peak_mb = max(peak[0], rss_mb())


def needs_backward(method: str, config) -> bool:
    """Whether fitting ``method`` under ``config`` takes gradients through the model (LoRA, and
    stv with refinement); MTV and a search-only stv run forward passes alone."""
    return method == "lora" or (method == "stv" and getattr(config, "refine", 0) > 0)


def stored_numbers(artifact) -> dict[str, int]:
    """Numbers an artifact stores, and how many of them inference uses (task vectors keep
    their bank and policy for reports; a LoRA adapter uses all it stores)."""
    tensors = getattr(artifact, "tensors", None)
    if tensors is not None:
        total = sum(t.numel() for t in tensors.values())
        return {"stored": total, "used": total}
    used = artifact.vectors.numel() + sum(t.numel() for t in (artifact.shifts, artifact.continuation) if t is not None)
    extra = sum(t.numel() for t in (artifact.bank, artifact.probabilities) if t is not None)
    return {"stored": used + extra + artifact.locations.numel(), "used": used}


def cost_summary(costs: list[dict]) -> dict:
    """One method's cost over units: mean fit and eval seconds, the largest peak memory (MB),
    whether any fit took a backward pass, mean numbers used at inference."""
    out: dict = {}
    for key in ("fit_s", "eval_s", "used"):
        values = [c[key] for c in costs if key in c]
        if values:
            out[key] = round(float(sum(values) / len(values)), 2)
    peaks = [c["peak_mb"] for c in costs if "peak_mb" in c]
    if peaks:
        out["peak_mb"] = max(peaks)
    if any("backward" in c for c in costs):
        out["backward"] = any(c.get("backward") for c in costs)
    return out
