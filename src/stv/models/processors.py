"""Processor loading that works without torchvision.

Qwen2/2.5/3-VL and LLaVA-OneVision processors take a video processor, and every video
processor in transformers needs torchvision. Users without it (and our CPU machines, where
torchvision must not be installed) get a subclass that drops the video argument; images
work exactly as before.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any, Iterator

import transformers
from transformers import AutoProcessor, ProcessorMixin

VIDEO_PROCESSOR_CLASSES = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor", "LlavaOnevisionProcessor")


def has_torchvision() -> bool:
    """torchvision can be imported (we never install it)."""
    return importlib.util.find_spec("torchvision") is not None


@functools.cache
def without_video(class_name: str) -> type[ProcessorMixin]:
    """A subclass of ``transformers.<class_name>`` whose only sub-processors are image + tokenizer."""
    base = getattr(transformers, class_name)

    # The same parameters as the base minus the video processor: ProcessorMixin reads the
    # sub-processor list and the accepted config keys off this function's own code object,
    # so saving and loading keep every other argument (e.g. LLaVA-OneVision's num_image_tokens).
    params = [
        p
        for name, p in inspect.signature(base.__init__).parameters.items()
        if name not in ("self", "video_processor") and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    defaults = {f"_d{i}": p.default if p.default is not p.empty else None for i, p in enumerate(params)}
    arglist = ", ".join(f"{p.name}=_d{i}" for i, p in enumerate(params))
    forward = ", ".join(f"{p.name}={p.name}" for p in params)
    source = (
        f"def __init__(self, {arglist}, **kwargs):\n"
        f"    _base.__init__(self, {forward}, video_processor=None, **kwargs)\n"
    )
    namespace = {"_base": base, **defaults}
    exec(source, namespace)  # noqa: S102 - builds a signature, runs no outside input
    __init__ = namespace["__init__"]
    return type(class_name, (base,), {"__init__": __init__, "__module__": __name__, "__qualname__": class_name})


def processor_class_name(path: str | Path, **hub_kwargs) -> str | None:
    """The processor class a checkpoint declares (processor_config.json), if any."""
    from transformers.utils import cached_file

    for name in ("processor_config.json", "preprocessor_config.json"):
        try:
            file = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        except OSError:
            file = None
        if file:
            data = json.loads(Path(file).read_text())
            if data.get("processor_class"):
                return data["processor_class"]
    return None


def load_processor(path: str | Path, trust_remote_code: bool = False, **hub_kwargs):
    """AutoProcessor, or the video-free subclass when torchvision is missing."""
    class_name = processor_class_name(path, **hub_kwargs)
    if class_name in VIDEO_PROCESSOR_CLASSES and not has_torchvision():
        return without_video(class_name).from_pretrained(str(path), **hub_kwargs)
    return AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code, **hub_kwargs)


@contextlib.contextmanager
def left_padding(tokenizer: Any) -> Iterator[None]:
    """``tokenizer`` pads on the left (with EOS where it has no pad token) inside the block
    only: the caller's tokenizer is left as it was."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def tokenized(processor: Any, texts: list[str], images: list[list[Any]]):
    """The padded batch of ``texts`` with each row's ``images``: the processor's for a model
    that takes images, else the tokenizer's (``processor`` is the tokenizer of a text model)."""
    if hasattr(processor, "image_processor"):
        if any(images):
            # processors take a nested list only when every row has an image
            given = [im for imgs in images for im in imgs] if any(not imgs for imgs in images) else images
            return processor(text=texts, images=given, padding=True, return_tensors="pt")
        return processor(text=texts, padding=True, return_tensors="pt")
    return processor(texts, padding=True, return_tensors="pt", add_special_tokens=True)
