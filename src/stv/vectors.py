"""TaskVectors: the fitted artifact (safetensors + JSON), saved and applied like a PEFT adapter."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from .artifact import Artifact, local_folder
from .config import Policy
from .errors import StvError
from .hooks.heads import write_heads
from .io import atomic_write_folder
from .version import stv_version

WEIGHTS_NAME = "task_vectors.safetensors"
OWN_OUTPUT_ROWS = ("vectors", "continuation")  # tensors whose rows may mean "the head's own output"
CONFIG_NAME = "task_vectors.json"


@dataclass
class TaskVectorsConfig:
    """What an artifact was fitted on and with (``task_vectors.json``): enough to refuse the
    wrong model (layout, architecture, weights) and to reproduce the fit."""

    method: str = "stv"  # stv | mtv
    model: str = ""
    revision: str | None = None
    family: str = ""
    architecture: str = ""
    weights: str = ""  # LMM.weights_fingerprint() of the model fitted on
    params: str = ""  # LMM.params_fingerprint(): the same weights however they were loaded
    num_layers: int = 0
    num_heads: int = 0
    dtype: str = ""
    policy: Policy = "every_step"  # insertion schedule the vectors were fitted for
    task: dict = field(default_factory=dict)  # the prompt template (asdict(Task))
    hyperparameters: dict = field(default_factory=dict)  # asdict(STVConfig) or asdict(MTVConfig)
    data_fingerprint: str = ""
    train_examples: int = 0
    stv_version: str = field(default_factory=stv_version)
    transformers_version: str = ""
    torch_version: str = ""
    extra: dict = field(default_factory=dict)  # anything else (variant, continuation, ...), kept flat in JSON

    @classmethod
    def for_fit(cls, lmm, method: str, config, task, train) -> "TaskVectorsConfig":
        """The config of vectors fitted on ``lmm`` with ``config`` (an STVConfig or MTVConfig)."""
        import transformers

        from .runs.fingerprint import data_fingerprint

        return cls(
            method=method,
            model=str(lmm.name),
            revision=lmm.revision,
            family=lmm.family,
            architecture=type(lmm.model).__name__,
            weights=lmm.weights_fingerprint(),
            params=lmm.params_fingerprint(),
            num_layers=lmm.heads.num_layers,
            num_heads=lmm.heads.num_heads,
            dtype=str(lmm.dtype).replace("torch.", ""),
            policy=config.policy,
            task=asdict(task),
            hyperparameters=asdict(config),
            data_fingerprint=data_fingerprint(train),
            train_examples=len(train),
            transformers_version=transformers.__version__,
            torch_version=torch.__version__,
        )

    def to_dict(self) -> dict:
        """The flat JSON form (``extra`` merged in)."""
        out = asdict(self)
        return {**{k: v for k, v in out.items() if k != "extra"}, **out["extra"]}

    @classmethod
    def from_dict(cls, data: dict) -> "TaskVectorsConfig":
        """From ``task_vectors.json`` (or any flat dict): unknown keys go to ``extra``; the
        shape keys that ``save_pretrained`` adds are dropped (the tensors carry them)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        derived = {"head_dim", "num_locations"}
        return cls(
            **{k: v for k, v in data.items() if k in known},
            extra={k: v for k, v in data.items() if k not in known and k not in derived},
        )

    def with_(self, **changes) -> "TaskVectorsConfig":
        """A copy with ``changes``; names that are not fields go to ``extra``."""
        known = {f.name for f in fields(self)} - {"extra"}
        own = {k: v for k, v in changes.items() if k in known}
        return dc_replace(self, **own, extra={**self.extra, **{k: v for k, v in changes.items() if k not in known}})


class ArtifactError(StvError):
    """A task-vector folder whose files are damaged or disagree with each other."""


class ArtifactMismatchError(StvError):
    """Task vectors applied to a model they were not fitted for."""


@dataclass
class TaskVectors(Artifact):
    """Vectors written into given (layer, head) locations at the last position."""

    locations: torch.Tensor  # (K, 2) int64: layer, head
    vectors: torch.Tensor  # (K, head_dim) float32
    config: TaskVectorsConfig = field(default_factory=TaskVectorsConfig)  # a flat dict is converted
    bank: torch.Tensor | None = None  # (K, M, head_dim) candidates
    probabilities: torch.Tensor | None = None  # (K, M) final policy
    continuation: torch.Tensor | None = None  # (T, K, head_dim) written at generated tokens 1..T (prompt_last)
    shifts: torch.Tensor | None = None  # (K, head_dim) added after the write (NaN vector: to own output)
    allow_other_weights: bool = False  # insert into another checkpoint of the same layout (not saved)
    log: Any = field(default=None, repr=False, compare=False)  # the fit's FitLog (scan, bank, search; not saved)

    def __post_init__(self) -> None:
        if isinstance(self.config, dict):
            self.config = TaskVectorsConfig.from_dict(self.config)
        self.locations = torch.as_tensor(self.locations, dtype=torch.long).reshape(-1, 2)
        self.vectors = torch.as_tensor(self.vectors, dtype=torch.float32)
        if self.vectors.dim() != 2 or self.vectors.shape[0] != self.locations.shape[0]:
            raise StvError(f"vectors {tuple(self.vectors.shape)} do not match {len(self.locations)} locations")
        if self.shifts is not None:
            self.shifts = torch.as_tensor(self.shifts, dtype=torch.float32)
            if self.shifts.shape != self.vectors.shape or torch.isnan(self.shifts).any():
                raise StvError(f"shifts {tuple(self.shifts.shape)} must be finite and shaped like the vectors")
        if self.continuation is not None:
            self.continuation = torch.as_tensor(self.continuation, dtype=torch.float32)
            if self.continuation.dim() != 3 or self.continuation.shape[1:] != self.vectors.shape:
                raise StvError(
                    f"continuation {tuple(self.continuation.shape)} must be (T, {len(self.locations)}, {self.head_dim})"
                )

    @property
    def head_dim(self) -> int:
        """Width of one head's vector."""
        return self.vectors.shape[1]

    def fingerprint(self) -> str:
        """Hash of the locations, vectors and insertion policy (16 hex digits)."""
        digest = hashlib.sha256(self.locations.numpy().tobytes() + self.vectors.numpy().tobytes())
        if self.continuation is not None:
            digest.update(self.continuation.numpy().tobytes())
        if self.shifts is not None:
            digest.update(b"shifts" + self.shifts.numpy().tobytes())
        digest.update(str(self.config.policy).encode())
        return digest.hexdigest()[:16]

    def location_list(self) -> list[tuple[int, int]]:
        """The locations as (layer, head) tuples."""
        return [(int(layer), int(h)) for layer, h in self.locations.tolist()]

    # ------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write safetensors + JSON atomically: a reader never sees a half-written artifact."""
        tensors = {"locations": self.locations.contiguous(), "vectors": self.vectors.contiguous()}
        if self.bank is not None:
            tensors["bank"] = self.bank.float().contiguous()
        if self.probabilities is not None:
            tensors["probabilities"] = self.probabilities.float().contiguous()
        if self.continuation is not None:
            tensors["continuation"] = self.continuation.float().contiguous()
        if self.shifts is not None:
            tensors["shifts"] = self.shifts.float().contiguous()
        for name in OWN_OUTPUT_ROWS:  # NaN rows ("the head's own output") as an explicit mask
            if name in tensors:
                own = torch.isnan(tensors[name]).any(-1)  # (K,) or (T, K)
                tensors[name] = torch.nan_to_num(tensors[name], nan=0.0).contiguous()
                tensors[f"{name}_own_output"] = own.contiguous()
        config = {**self.config.to_dict(), "head_dim": self.head_dim, "num_locations": len(self.locations)}

        def write(folder: Path) -> None:
            save_file(tensors, folder / WEIGHTS_NAME)
            (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))

        return atomic_write_folder(directory, write, (WEIGHTS_NAME, CONFIG_NAME))

    @classmethod
    def from_pretrained(cls, directory: str | Path, revision: str | None = None) -> "TaskVectors":
        """Load a folder written by :meth:`save_pretrained` (or a hub repo id, at ``revision``),
        refusing damaged or mismatched files."""
        directory = local_folder(directory, (WEIGHTS_NAME, CONFIG_NAME), revision)
        if not (directory / WEIGHTS_NAME).is_file() or not (directory / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{directory} holds no task vectors ({WEIGHTS_NAME} + {CONFIG_NAME}); "
                "create them with `stv fit` or TaskVectors.save_pretrained"
            )
        try:
            tensors = load_file(directory / WEIGHTS_NAME)
        except Exception as err:  # safetensors raises its own error types for a cut or corrupt file
            raise ArtifactError(
                f"{directory / WEIGHTS_NAME} cannot be read ({err}); the file is damaged: fit the vectors again"
            ) from None
        try:
            config = json.loads((directory / CONFIG_NAME).read_text())
        except json.JSONDecodeError as err:
            raise ArtifactError(
                f"{directory / CONFIG_NAME} is not valid JSON (line {err.lineno}: {err.msg}); "
                "restore it or fit the vectors again"
            ) from None
        missing = {"locations", "vectors"} - set(tensors)
        if missing:
            raise ArtifactError(f"{directory / WEIGHTS_NAME} lacks {sorted(missing)}; fit the vectors again")
        if not isinstance(config, dict):
            raise ArtifactError(f"{directory / CONFIG_NAME} is not a JSON object; restore it or fit the vectors again")
        for name in OWN_OUTPUT_ROWS:
            if name in tensors:
                tensors[name] = _with_own_rows(directory / WEIGHTS_NAME, name, tensors)
        bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ArtifactError(
                f"{directory / WEIGHTS_NAME} holds non-finite numbers in {', '.join(bad)}; the file is damaged: "
                "fit the vectors again"
            )
        for name in OWN_OUTPUT_ROWS:
            if name in tensors:
                tensors[name] = torch.where(tensors.pop(f"{name}_own_output")[..., None], float("nan"), tensors[name])
        stored = config.get("head_dim")
        if stored is not None and stored != tensors["vectors"].shape[-1]:
            raise ArtifactError(
                f"{directory / CONFIG_NAME} says head_dim {stored} but the vectors in {WEIGHTS_NAME} "
                f"have {tensors['vectors'].shape[-1]}; the two files do not belong together"
            )
        return cls(
            tensors["locations"],
            tensors["vectors"],
            TaskVectorsConfig.from_dict(config),
            tensors.get("bank"),
            tensors.get("probabilities"),
            tensors.get("continuation"),
            shifts=tensors.get("shifts"),
        )

    # ------------------------------------------------------------- inference
    def check_model(self, lmm, allow_other_weights: bool = False) -> None:
        """Refuse a model whose head layout, architecture or weights differ from the ones
        fitted on (``allow_other_weights``: accept another checkpoint of the same layout)."""
        check_fitted_on(self.config, lmm, allow_other_weights or self.allow_other_weights, self.head_dim)
        lmm.heads.check(self.location_list())

    @contextlib.contextmanager
    def apply(self, lmm, policy: Policy | None = None, allow_other_weights: bool = False) -> Iterator[None]:
        """Insert the vectors while the block runs (``policy`` defaults to the fitted one) into
        an :class:`~stv.models.LMM` or a plain transformers model (``model.generate`` then
        runs with them)."""
        from .models import LMM

        lmm = LMM.wrapping(lmm)
        self.check_model(lmm, allow_other_weights)
        policy = policy or self.config.policy
        later = self.continuation if policy == "prompt_last" else None  # every_step writes step 0's values
        with write_heads(
            lmm.model, lmm.heads, self.location_list(), self.vectors, policy, continuation=later, shifts=self.shifts
        ):
            yield


def check_fitted_on(config: TaskVectorsConfig, lmm, allow_other_weights: bool, head_dim: int | None = None) -> None:
    """Refuse a model whose weights (unless ``allow_other_weights``), head layout or
    architecture differ from what an artifact's ``config`` says it was fitted on."""
    heads = lmm.heads
    fitted = config.weights
    same = fitted == lmm.weights_fingerprint() or (config.params and config.params == lmm.params_fingerprint())
    if fitted and not allow_other_weights and not same:
        raise ArtifactMismatchError(
            f"this {config.method} artifact was fitted on other weights ({config.model}, {fitted}) than "
            f"{lmm.name} ({lmm.weights_fingerprint()}); fit it again, or pass --allow-other-weights "
            "(allow_other_weights=True) to apply it anyway"
        )
    problems = []
    if head_dim is not None and head_dim != heads.head_dim:
        problems.append(f"head_dim {head_dim} vs the model's {heads.head_dim}")
    for key, have in (
        ("num_layers", heads.num_layers),
        ("num_heads", heads.num_heads),
        ("architecture", type(lmm.model).__name__),
    ):
        want = getattr(config, key)
        if want and want != have:  # 0 / "": not recorded
            problems.append(f"{key} {want!r} vs the model's {have!r}")
    if problems:
        raise ArtifactMismatchError(
            f"this {config.method} artifact was fitted on {config.model or 'another model'}: "
            + "; ".join(problems)
            + ". Fit it again on this model with `stv fit`"
        )


def _with_own_rows(path: Path, name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """``tensors[name]`` checked against its stored mask of own-output rows (a file written
    before the mask existed: whole NaN rows are those rows, the mask is made from them)."""
    values = tensors[name].float()
    own = tensors.get(f"{name}_own_output")
    if own is None:
        own = torch.isnan(values).all(-1)
        values = torch.where(own[..., None], 0.0, values)
    if own.dtype != torch.bool or own.shape != values.shape[:-1]:
        raise ArtifactError(
            f"{path}: {name}_own_output does not match {name}; the file is damaged: fit the vectors again"
        )
    tensors[f"{name}_own_output"] = own
    return values
