"""Load a multimodal (or text-only) model with its processor and head map."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import AutoConfig

from ..heads import HeadMap
from .lmm import LMM, Piece, Prompt, Render
from .processors import load_processor

__all__ = ["LMM", "Piece", "Prompt", "Render", "load_model", "ModelLoadError"]


class ModelLoadError(ValueError):
    """A model folder or hub id could not be loaded as a supported model."""


def _model_class(config) -> type:
    """The generation class for a config: image-text-to-text first, then causal LM."""
    for auto in (transformers.AutoModelForImageTextToText, transformers.AutoModelForCausalLM):
        mapping = auto._model_mapping
        if type(config) in mapping:
            return mapping[type(config)]
    raise ModelLoadError(
        f"architecture {type(config).__name__} (model_type={config.model_type!r}) is not a "
        "transformers image-text-to-text or causal LM model; stv supports Qwen2/2.5/3-VL, Idefics2/3, "
        "LLaVA, LLaVA-OneVision, Gemma3 and text-only causal LMs"
    )


def load_model(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
    heads_pattern: str | None = None,
    num_heads: int | None = None,
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
) -> LMM:
    """Load ``name_or_path`` (hub id or local folder) ready for recording and insertion.

    ``heads_pattern`` (e.g. ``"transformer.h.{layer}.attn.c_proj"``) overrides head discovery
    for architectures we don't know; ``trust_remote_code`` stays off unless asked for.
    """
    path = str(name_or_path)
    local = Path(path)
    if local.exists() and not (local / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model folder (no config.json); pass a hub id or a folder "
                             "written by save_pretrained")
    hub = {"revision": revision} if revision else {}
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot read a model config from {path}: {err}") from err
    if trust_remote_code and type(config).__module__.startswith("transformers_modules"):
        cls = transformers.AutoModelForCausalLM
    else:
        cls = _model_class(config)
    if isinstance(dtype, str):
        dtype = {"auto": "auto", "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    kwargs: dict = {"dtype": dtype or torch.float32, **hub}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
        if max_memory:
            kwargs["max_memory"] = max_memory
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    try:
        model = cls.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelLoadError(f"cannot load the weights of {path}: {err}") from err
    if device_map is None and device is not None:
        model.to(device)
    model.eval()
    try:
        processor = load_processor(path, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"cannot load the processor/tokenizer of {path}: {err}") from err
    heads = HeadMap.from_model(model, pattern=heads_pattern, num_heads=num_heads)
    return LMM(model=model, processor=processor, heads=heads, name=path, revision=revision,
               family=config.model_type)
