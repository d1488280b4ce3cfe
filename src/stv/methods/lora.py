"""LoRA through Hugging Face ``peft``: the gradient baseline a user reaches for first.

Trained on zero-shot prompts of the training split, rendered with the same template as
evaluation, on the cross-entropy of the answer line and the token that ends it (teacher-forced
as ``generate`` would write them, as stv's refinement is). Only the text decoder's attention
projections get adapters; a vision tower is never touched. The defaults are fixed here, so no
comparison tunes the baseline down.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..artifact import Artifact, local_folder
from ..data.example import Example
from ..errors import StvError
from ..io import atomic_write_folder
from ..models import LMM
from ..tasks import Task, task_for
from ..vectors import ArtifactError, TaskVectorsConfig, check_fitted_on
from .refine import answer_loss, answer_queries

ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's names: PeftModel.from_pretrained reads the folder too
ADAPTER_CONFIG = "adapter_config.json"
STV_CONFIG = "stv_adapter.json"  # what it was fitted on, as task_vectors.json says for vectors
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class LoRAConfig:
    """LoRA's settings (fixed defaults: r 8, alpha 16, no dropout, q/k/v/o, 100 AdamW steps of
    8 queries at lr 1e-3, constant schedule, gradient norm clipped at 1)."""

    r: int = field(default=8, metadata={"help": "rank of each adapter"})
    alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input"})
    targets: tuple[str, ...] = field(default=PROJECTIONS, metadata={"help": "attention projections adapted"})
    steps: int = field(default=100, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=8, metadata={"help": "training queries per step"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (constant)"})
    clip: float = field(default=1.0, metadata={"help": "gradient norm clipping"})
    seed: int = field(default=0, metadata={"help": "seed of the adapters' initialisation and the query draws"})
    policy: str = "prompt_last"  # no insertion schedule; recorded so every artifact names one

    def check(self) -> None:
        """One clear error for settings that cannot train."""
        problems = [
            f"{name}={getattr(self, name)} must be {rule}"
            for name, rule, ok in (
                ("r", ">= 1", self.r >= 1),
                ("alpha", "> 0", self.alpha > 0),
                ("dropout", "in [0, 1)", 0 <= self.dropout < 1),
                ("steps", ">= 1", self.steps >= 1),
                ("batch_size", ">= 1", self.batch_size >= 1),
                ("lr", "a finite number > 0", bool(np.isfinite(self.lr)) and self.lr > 0),
                ("clip", "a finite number > 0", bool(np.isfinite(self.clip)) and self.clip > 0),
                ("seed", ">= 0", self.seed >= 0),
            )
            if not ok
        ]
        if not self.targets or not set(self.targets) <= set(PROJECTIONS):
            problems.append(f"targets={self.targets} must be some of {', '.join(PROJECTIONS)}")
        if problems:
            raise StvError("LoRAConfig: " + "; ".join(problems))


def target_modules(lmm: LMM, targets: Sequence[str] = PROJECTIONS) -> list[str]:
    """Full names of the text decoder's attention projections: the siblings of each layer's
    ``o_proj`` that the head map found (so a multimodal model's vision tower is never matched)."""
    names = {module: name for name, module in lmm.model.named_modules()}
    found = []
    for layer, projection in enumerate(lmm.heads.projections):
        attention = names[projection].rpartition(".")[0]
        here = [f"{attention}.{t}" for t in targets]
        missing = [n for n in here if not isinstance(lmm.model.get_submodule(n), torch.nn.Linear)]
        if missing:
            raise StvError(
                f"{lmm.name}: layer {layer}'s attention has no linear {', '.join(missing)}; "
                f"LoRA here adapts {', '.join(targets)} modules"
            )
        found += here
    return found


@dataclass
class LoRAAdapter(Artifact):
    """A fitted LoRA adapter: peft's tensors and config, plus what it was fitted on."""

    HUB_KIND = "LoRA adapter"

    tensors: dict[str, torch.Tensor]  # peft's state-dict names -> (r, in) / (out, r)
    peft_config: dict  # peft LoraConfig.to_dict()
    config: TaskVectorsConfig
    allow_other_weights: bool = False
    log: dict = field(default_factory=dict, repr=False, compare=False)  # the fit's timings (not saved)

    def fingerprint(self) -> str:
        """Hash of the adapter's tensors (16 hex digits)."""
        digest = hashlib.sha256()
        for name in sorted(self.tensors):
            digest.update(name.encode() + self.tensors[name].float().numpy().tobytes())
        return digest.hexdigest()[:16]

    def check_model(self, lmm: LMM, allow_other_weights: bool = False) -> None:
        """Refuse a model other than the one fitted on (as task vectors do)."""
        check_fitted_on(self.config, lmm, allow_other_weights or self.allow_other_weights)

    @contextlib.contextmanager
    def apply(self, lmm: LMM, policy: str | None = None, allow_other_weights: bool = False) -> Iterator[None]:
        """The adapters inside ``lmm.model`` while the block runs, removed after (``policy``
        is accepted for the task vectors' signature; LoRA acts at every position). ``lmm``: an
        :class:`~stv.models.LMM` or a plain transformers model."""
        lmm = LMM.wrapping(lmm)
        self.check_model(lmm, allow_other_weights)
        from peft import set_peft_model_state_dict

        with attached(lmm, self.peft_config) as peft_model:
            result: Any = set_peft_model_state_dict(peft_model, self.tensors)
            if result.unexpected_keys:
                raise ArtifactError(
                    f"the adapter holds tensors this model has no place for: {result.unexpected_keys[:3]}"
                )
            yield

    def save_pretrained(self, directory: str | Path) -> Path:
        """peft's adapter folder (``adapter_model.safetensors``, ``adapter_config.json``) and
        ``stv_adapter.json``, written atomically."""
        config = self.config.to_dict()

        def write(folder: Path) -> None:
            save_file({k: v.contiguous() for k, v in self.tensors.items()}, folder / ADAPTER_WEIGHTS)
            (folder / ADAPTER_CONFIG).write_text(json.dumps(self.peft_config, indent=2, default=list))
            (folder / STV_CONFIG).write_text(json.dumps(config, indent=2))

        return atomic_write_folder(directory, write, (ADAPTER_WEIGHTS, ADAPTER_CONFIG, STV_CONFIG))

    @classmethod
    def from_pretrained(cls, directory: str | Path, revision: str | None = None) -> "LoRAAdapter":
        """Load a folder written by :meth:`save_pretrained` (or a hub repo id, at ``revision``),
        refusing damaged files."""
        directory = local_folder(directory, (ADAPTER_WEIGHTS, ADAPTER_CONFIG, STV_CONFIG), revision)
        missing = [name for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, STV_CONFIG) if not (directory / name).is_file()]
        if missing:
            raise ArtifactError(
                f"{directory} is not a complete LoRA adapter folder ({', '.join(missing)} is missing); fit it again"
            )
        try:
            tensors = load_file(directory / ADAPTER_WEIGHTS)
            peft_config = json.loads((directory / ADAPTER_CONFIG).read_text())
            config = json.loads((directory / STV_CONFIG).read_text())
        except Exception as err:  # safetensors' and json's own errors for a damaged file
            raise ArtifactError(
                f"{directory}: a file of the LoRA adapter cannot be read ({err}); fit it again"
            ) from None
        bad = [name for name, t in tensors.items() if not torch.isfinite(t).all()]
        if bad or not isinstance(peft_config, dict) or not isinstance(config, dict):
            raise ArtifactError(
                f"{directory} holds a damaged LoRA adapter ({'non-finite ' + bad[0] if bad else 'bad JSON'}); fit it again"
            )
        return cls(tensors, peft_config, TaskVectorsConfig.from_dict(config))


def is_adapter_folder(directory: str | Path) -> bool:
    """Whether ``directory`` holds a LoRA adapter written by stv (rather than task vectors)."""
    return (Path(directory) / STV_CONFIG).is_file()


@contextlib.contextmanager
def attached(lmm: LMM, peft_config: dict) -> Iterator:
    """``lmm.model`` with fresh LoRA adapters injected (peft), removed again on exit."""
    from peft import LoraConfig, get_peft_model

    known = {k: v for k, v in peft_config.items() if k in LoraConfig.__dataclass_fields__}
    with warnings.catch_warnings():  # peft reads a property transformers 5.x deprecates: not the user's to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(lmm.model, LoraConfig(**known))
    try:
        yield peft_model
    finally:
        peft_model.unload()  # every LoRA layer back to the original module, weights untouched


def fit_lora(
    lmm: LMM,
    train: Sequence[Example],
    config: LoRAConfig | None = None,
    task: Task | None = None,
    progress: bool = True,
) -> LoRAAdapter:
    """Train LoRA adapters on ``train``'s zero-shot prompts; ``.log`` holds {"train": seconds}."""
    config = config or LoRAConfig()
    config.check()
    task = task or task_for(train)
    if len(train) < config.batch_size:
        raise StvError(f"LoRA needs at least --batch-size {config.batch_size} training examples, got {len(train)}")
    peft_config: dict[str, Any] = {
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted(target_modules(lmm, config.targets)),
        "bias": "none",
        "peft_type": "LORA",
    }
    stv_config = TaskVectorsConfig.for_fit(lmm, "lora", config, task, train)  # before any adapter is in the model
    rng = np.random.default_rng(config.seed)
    start = time.perf_counter()
    torch.manual_seed(config.seed)  # peft draws lora_A's initial weights from torch's generator
    with attached(lmm, peft_config) as peft_model:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=config.lr)
        bar = tqdm(range(config.steps), desc="lora", disable=not progress, leave=False)
        for _ in bar:
            drawn = answer_queries(
                lmm, [train[i] for i in rng.choice(len(train), config.batch_size, replace=False)], task, "answer"
            )
            assert drawn.valid is not None  # the "answer" objective gives every row its answer line
            with torch.enable_grad():
                logits = lmm.answer_logits(drawn.inputs, drawn.target, drawn.valid)  # (B, T, V)
                loss = answer_loss(logits.float(), drawn)
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.clip)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        from peft import get_peft_model_state_dict

        tensors = {k: v.detach().clone().cpu() for k, v in get_peft_model_state_dict(peft_model).items()}
    seconds = time.perf_counter() - start
    return LoRAAdapter(tensors, peft_config, stv_config, log={"train": seconds})


def load_fitted(directory: str | Path):
    """Whatever ``stv fit`` wrote into ``directory`` (a folder or a hub repo id): a
    :class:`LoRAAdapter` or task vectors."""
    from ..vectors import CONFIG_NAME, WEIGHTS_NAME, TaskVectors

    folder = local_folder(directory, (STV_CONFIG, ADAPTER_WEIGHTS, ADAPTER_CONFIG, WEIGHTS_NAME, CONFIG_NAME))
    return LoRAAdapter.from_pretrained(folder) if is_adapter_folder(folder) else TaskVectors.from_pretrained(folder)
