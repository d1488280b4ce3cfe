"""Data parallelism over ranks started by ``accelerate launch`` or ``torchrun``.

Each rank takes every ``world``-th batch of a list (batch boundaries are the same as in a
single process, so padding, and therefore every number, is the same), sums and gathers go
through ``torch.distributed`` (gloo on CPU, NCCL on GPU, set up by accelerate), and only
rank 0 writes files. Outside a launcher everything here is a no-op for one process.
"""

from __future__ import annotations

import atexit
import functools
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class Dist:
    """This process's rank and the world size (1 without torchrun / accelerate)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that writes files and prints."""
        return self.rank == 0

    def batches(self, n: int, batch_size: int) -> list[tuple[int, int, int]]:
        """(batch index, start, end) of this rank's batches of ``n`` items."""
        spans = [(i, s, min(s + batch_size, n)) for i, s in enumerate(range(0, n, batch_size))]
        return spans[self.rank :: self.world]

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over ranks, on every rank."""
        if self.enabled:
            import torch.distributed as dist

            out = tensor.clone()
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
            return out
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


@functools.cache
def current() -> Dist:
    """This process's rank and world size; starts the process group when launched with several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    atexit.register(_destroy_group)
    return Dist(state.process_index, state.num_processes)


def _destroy_group() -> None:
    """End the process group while the interpreter is still whole: gloo's worker threads left
    to interpreter shutdown abort the process ("terminate called without an active
    exception", pytorch/pytorch#190489), seen here as a rank exiting with an error after all
    its work was done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for_rank() -> str | None:
    """The device a data-parallel rank should load its model on (None: the default)."""
    if current().enabled and torch.cuda.is_available():
        from accelerate import PartialState

        return str(PartialState().device)
    return None


def assemble(parts: Sequence[list[tuple[int, Any]]]) -> list[Any]:
    """Merge per-rank lists of (batch index, value) into batch order."""
    return [value for _, value in sorted((item for part in parts for item in part), key=lambda t: t[0])]
