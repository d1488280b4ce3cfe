"""The labs: small LLaVA-architecture models that learn in context from digit images.

``lab`` is trained here from scratch (checkpoint shipped); ``lab-smollm2`` is SmolLM2-135M
with a vision tower trained here (tower shipped, assembled at first use); ``lab-dino`` is
SmolLM2-135M with pretrained DINOv2-small and a projector trained here (projector shipped). Both register
with the model registry (entry point ``stv.models``), so ``stv.load_model("lab")`` works.
"""

from pathlib import Path

from .model import LAB_CHECKPOINT, build_lab_model, load_lab

__all__ = ["LAB_CHECKPOINT", "build_lab_model", "load_lab", "register_models"]


def _smol_available() -> str:
    from ...models.named import NAMED

    smol = NAMED["smollm2-135m"]
    return "available (assembled at first use)" if smol.installed() else f"needs smollm2-135m: {smol.pip}"


def _smol_folder(progress: bool) -> tuple[Path, str | None]:
    from .smol import assembled_folder

    return assembled_folder(progress)


def _dino_folder(progress: bool) -> tuple[Path, str | None]:
    from .dino_model import assembled_folder

    return assembled_folder(progress)


def _dino_available() -> str:
    from .dino_model import available

    return available()


def register_models() -> None:
    """Register ``lab``, ``lab-smollm2`` and ``lab-dino`` by name (called through the entry point)."""
    from ...models.registry import RegisteredModel, register_model

    register_model(
        RegisteredModel(
            "lab",
            "the from-scratch lab: a tiny LLaVA trained here on digit tasks (shipped checkpoint)",
            lambda progress: (LAB_CHECKPOINT, None),
            folder=LAB_CHECKPOINT,
        )
    )
    register_model(
        RegisteredModel(
            "lab-smollm2",
            "LLaVA: SmolLM2-135M (frozen) + a digit vision tower trained here (numbers:TASK)",
            _smol_folder,
            available=_smol_available,
        )
    )
    register_model(
        RegisteredModel(
            "lab-dino",
            "LLaVA: DINOv2-small (pretrained) + a projector trained here + SmolLM2-135M (frozen) (fashion:TASK)",
            _dino_folder,
            available=_dino_available,
        )
    )
