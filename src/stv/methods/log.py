"""What a fit produced besides its vectors (shared by STV and MTV)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import StvError
from ..hooks.headmap import Location
from .reinforce import ReinforceResult
from .scan import ScanResult


@dataclass
class FitLog:
    """What a fit (STV or MTV) produced besides its vectors, for reports and ablations."""

    scan_result: ScanResult | None  # None for MTV (its means need no scan)
    locations: list[Location]  # where the search chose (STV: the top-K; MTV: every head)
    bank: torch.Tensor
    search: ReinforceResult | None  # the REINFORCE run (not the insertion policy)
    timings: dict[str, float]

    @property
    def scan(self) -> ScanResult:
        """The sensitivity scan of an STV fit."""
        if self.scan_result is None:
            raise StvError("this fit ran no sensitivity scan (MTV)")
        return self.scan_result
