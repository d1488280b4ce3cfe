"""TaskVectors: the fitted artifact (safetensors + JSON), saved and applied like a PEFT adapter."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from .heads import Policy, replace

WEIGHTS_NAME = "task_vectors.safetensors"
CONFIG_NAME = "task_vectors.json"


class ArtifactMismatchError(ValueError):
    """Task vectors applied to a model they were not fitted for."""


@dataclass
class TaskVectors:
    """Vectors written into given (layer, head) locations at the last position."""

    locations: torch.Tensor  # (K, 2) int64: layer, head
    vectors: torch.Tensor  # (K, head_dim) float32
    config: dict = field(default_factory=dict)
    bank: torch.Tensor | None = None  # (K, M, head_dim) candidates
    probabilities: torch.Tensor | None = None  # (K, M) final policy

    def __post_init__(self) -> None:
        self.locations = torch.as_tensor(self.locations, dtype=torch.long).reshape(-1, 2)
        self.vectors = torch.as_tensor(self.vectors, dtype=torch.float32)
        if self.vectors.dim() != 2 or self.vectors.shape[0] != self.locations.shape[0]:
            raise ValueError(f"vectors {tuple(self.vectors.shape)} do not match {len(self.locations)} locations")

    @property
    def head_dim(self) -> int:
        return self.vectors.shape[1]

    def location_list(self) -> list[tuple[int, int]]:
        return [(int(l), int(h)) for l, h in self.locations.tolist()]

    # ------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write safetensors + JSON atomically: a reader never sees a half-written artifact."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"locations": self.locations.contiguous(), "vectors": self.vectors.contiguous()}
        if self.bank is not None:
            tensors["bank"] = self.bank.float().contiguous()
        if self.probabilities is not None:
            tensors["probabilities"] = self.probabilities.float().contiguous()
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            save_file(tensors, tmp / WEIGHTS_NAME)
            (tmp / CONFIG_NAME).write_text(json.dumps({**self.config, "head_dim": self.head_dim,
                                                       "num_locations": len(self.locations)}, indent=2))
            if directory.exists():
                for name in (WEIGHTS_NAME, CONFIG_NAME):  # replace file by file, each atomically
                    os.replace(tmp / name, directory / name)
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TaskVectors":
        directory = Path(directory)
        if not (directory / WEIGHTS_NAME).is_file() or not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{directory} holds no task vectors ({WEIGHTS_NAME} + {CONFIG_NAME}); "
                                    "create them with `stv fit` or TaskVectors.save_pretrained")
        tensors = load_file(directory / WEIGHTS_NAME)
        config = json.loads((directory / CONFIG_NAME).read_text())
        return cls(tensors["locations"], tensors["vectors"], config, tensors.get("bank"), tensors.get("probabilities"))

    # ------------------------------------------------------------- inference
    def check_model(self, lmm) -> None:
        """Refuse a model whose head layout or architecture differs from the one fitted on."""
        heads = lmm.heads
        problems = []
        if self.head_dim != heads.head_dim:
            problems.append(f"head_dim {self.head_dim} vs the model's {heads.head_dim}")
        for key, have in (("num_layers", heads.num_layers), ("num_heads", heads.num_heads),
                          ("architecture", type(lmm.model).__name__)):
            want = self.config.get(key)
            if want is not None and want != have:
                problems.append(f"{key} {want!r} vs the model's {have!r}")
        if problems:
            raise ArtifactMismatchError(
                f"these task vectors were fitted on {self.config.get('model', 'another model')}: "
                + "; ".join(problems) + ". Fit them again on this model with `stv fit`")
        heads.check(self.location_list())

    @contextlib.contextmanager
    def apply(self, lmm, policy: Policy | None = None) -> Iterator[None]:
        """Insert the vectors while the block runs (``policy`` defaults to the fitted one)."""
        self.check_model(lmm)
        policy = policy or self.config.get("policy", "every_step")
        with replace(lmm.model, lmm.heads, self.location_list(), self.vectors, policy=policy):
            yield
