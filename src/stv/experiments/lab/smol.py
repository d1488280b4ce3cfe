"""The lab on a real pretrained decoder: LLaVA = SmolLM2-135M (frozen, 270 heads) + a vision
tower and projector trained here on digits (``lab-smollm2``).

Only the tower and projector ship (``smollm2_tower/``, well under 1 MB); the full model is
assembled at first use from the installed SmolLM2 wheel, cached like a converted GGUF, and
then loads with ``stv.load_model("lab-smollm2")`` like any folder. A digit is one 16x16
patch, so one image token, which stands where the digit's own token ("7") would stand in
text: the tower is trained so that SmolLM2 reads that token as the digit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...errors import StvError
from .model import square_image_processor

BACKBONE = "smollm2-135m"
NAME = "lab-smollm2"
TOWER = Path(__file__).parent / "smollm2_tower"
IMAGE_SIZE = PATCH = 16
IMAGE_TOKEN = "<image>"
VISION = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": IMAGE_SIZE,
    "patch_size": PATCH,
}


@dataclass(frozen=True)
class Vision:
    """A vision tower for SmolLM2: its transformers config, the square input size, the patch
    size (one image token per patch) and the pixel normalisation."""

    config: Callable[[], Any]
    image_size: int
    patch: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def tokens(self) -> int:
        """Image tokens per image."""
        return (self.image_size // self.patch) ** 2


def _digit_tower_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(**VISION)


DIGIT_TOWER = Vision(_digit_tower_config, IMAGE_SIZE, PATCH)


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tok.image_token = IMAGE_TOKEN
    tok.padding_side = "left"
    return tok


def build(backbone: Path, tower: dict | None = None, seed: int = 0, vision: Vision = DIGIT_TOWER):
    """(LlavaForConditionalGeneration, LlavaProcessor): SmolLM2's weights from ``backbone`` (a
    float folder) plus a ``vision`` tower + projector, random or from ``tower`` (a state dict)."""
    import torch
    from transformers import AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    tok = _tokenizer(backbone)
    text = AutoModelForCausalLM.from_pretrained(backbone, dtype=torch.float32)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    rows = max(text.get_input_embeddings().weight.shape[0], len(tok))  # never shrink a padded vocabulary
    text.resize_token_embeddings(rows, mean_resizing=False)
    with torch.no_grad():
        text.get_input_embeddings().weight[image_id] = 0  # "<image>" is never read (features replace it)
    config = LlavaConfig(
        vision_config=vision.config(),
        text_config=text.config,
        image_token_id=image_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=vision.tokens,
        tie_word_embeddings=text.config.tie_word_embeddings,
    )
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(text.model.state_dict())
    if text.config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    else:
        model.lm_head.load_state_dict(text.lm_head.state_dict())
    if tower is not None:
        missing = model.load_state_dict(tower, strict=False)
        if missing.unexpected_keys or any(k.startswith(("model.vision", "model.multi")) for k in missing.missing_keys):
            raise StvError(f"{NAME}: tower weights do not fit the architecture ({missing})")
    model.eval()
    processor = square_image_processor(tok, vision.image_size, vision.patch, vision.mean, vision.std)
    return model, processor


def tower_state(model) -> dict:
    """The trained part: vision tower + projector (what ships)."""
    return {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))
    }


def trained_weights(folder: Path, missing: str) -> tuple[dict, str]:
    """(state dict, sha256) of ``folder/model.safetensors``, the part of a lab trained here;
    ``missing`` is the error when the file is absent (``{weights}`` stands for its path)."""
    from safetensors.torch import load_file

    from ...models.gguf import sha256_file

    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        raise StvError(missing.format(weights=weights))
    return load_file(str(weights)), sha256_file(weights)


def shipped_tower(folder: Path = TOWER) -> tuple[dict, str]:
    """(state dict, sha256 of the weights file) of the shipped tower."""
    return trained_weights(
        folder, f"{NAME}: no tower weights at {{weights}}; train them with `stv lab train --backbone {BACKBONE}`"
    )


def cached_assembly(cache: str, name: str, record: dict, assemble: Callable, progress: bool) -> tuple[Path, str]:
    """(folder, fingerprint) of a lab assembled once into the stv cache under ``cache``, keyed
    by what it is made of (``record``: fingerprints, in order); ``assemble()`` returns the
    (model, processor) to save."""
    from ...models.gguf import cached_build

    key = hashlib.sha256(":".join(str(v) for v in record.values()).encode()).hexdigest()

    def write(out: Path) -> None:
        model, processor = assemble()
        model.save_pretrained(out)
        processor.save_pretrained(out)
        (out / "stv-lab.json").write_text(json.dumps(record, indent=1))

    folder = cached_build(cache, key, write, f"assembling {name} once" if progress else None)
    return folder, f"{name}:{key}"


def assembled_folder(progress: bool = True) -> tuple[Path, str]:
    """(model folder, fingerprint) of the assembled lab model, built once into the cache."""
    from ...models import resolve_source

    backbone, backbone_id = resolve_source(BACKBONE, progress=progress)
    tower, tower_sha = shipped_tower()
    record = {"backbone": backbone_id, "tower-sha256": tower_sha}
    return cached_assembly("lab", NAME, record, lambda: build(Path(backbone), tower), progress)


def load_tower(folder: Path = TOWER, progress: bool = True, backbone: str | Path = BACKBONE):
    """The lab as an LMM: the shipped tower through ``load_model("lab-smollm2")`` (assembled
    and cached), another tower folder (e.g. fresh from training) assembled in memory."""
    from ...models import LMM, load_model, resolve_source

    if Path(folder).resolve() == TOWER.resolve() and backbone == BACKBONE:
        return load_model(NAME, progress=progress)
    tower, _ = shipped_tower(Path(folder))
    source, _ = resolve_source(backbone, progress=progress)
    model, processor = build(Path(source), tower)
    return LMM.from_model(model, processor, name=f"{NAME}@{Path(folder).name}")
