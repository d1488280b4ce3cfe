"""Every call whose form depends on the transformers version, in one place.

transformers 5.25 renamed the key-value cache from ``past_key_values`` to ``cache`` (in a
forward's keywords and in its outputs; the old name warns and goes in 5.40). Older 5.x
releases know only the old name.
"""

from __future__ import annotations

import inspect
from typing import Any

_KEYWORDS: dict[type, str] = {}  # model class -> the keyword its forward takes the cache by


def cache_keyword(model: Any) -> str:
    """The keyword this model's forward takes its KV cache by: ``cache`` or ``past_key_values``."""
    kind = type(model)
    if kind not in _KEYWORDS:
        _KEYWORDS[kind] = "cache" if "cache" in inspect.signature(kind.forward).parameters else "past_key_values"
    return _KEYWORDS[kind]


def cache_of(outputs: Any) -> Any:
    """The KV cache a forward returned, under whichever name this transformers gives it."""
    if "cache" in outputs:
        return outputs["cache"]
    return outputs.past_key_values


def generation_class(config: Any) -> type | None:
    """The transformers class that generates text for ``config``: image-text-to-text first,
    then causal LM (None: neither knows it). Through the public auto mappings."""
    import transformers

    for mapping in (transformers.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, transformers.MODEL_FOR_CAUSAL_LM_MAPPING):
        if type(config) in mapping:
            return mapping[type(config)]
    return None


def source_name(config: Any) -> str:
    """Where a loaded model came from (hub id or folder), as transformers records it in a
    private config field; "" when it does not."""
    return str(getattr(config, "_name_or_path", "") or "")


def attention_implementation(model: Any) -> str:
    """The attention backend a loaded model runs ("sdpa", "eager", ...); transformers keeps it
    in a private config field."""
    return str(getattr(model.config, "_attn_implementation", None))


def croppable(cache: Any) -> bool:
    """Whether every layer of a KV cache is a plain dynamic layer, which can drop tokens again
    (sliding-window layers cannot). By class name: the sliding layer subclasses the plain one."""
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def sliding(model: Any) -> bool:
    """Whether some attention layer of ``model`` sees only a sliding window (Gemma 3): its
    cache then depends on how far a prompt is padded, so prompts are not padded together."""
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return "sliding_attention" in (getattr(text, "layer_types", None) or ())
