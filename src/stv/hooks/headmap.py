"""Where a model's attention heads live: each decoder layer's attention output projection.

A head's output is its slice of the *input* of that projection (``o_proj``):
``(batch, seq, heads * head_dim)`` viewed as ``(batch, seq, heads, head_dim)``. Finding the
projections is apart from hooking them (``heads.py``) so the scan, the artifacts and the
command line can name heads without touching torch hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from torch import nn

from ..errors import StvError

Location = tuple[int, int]  # (layer, head)


class HeadDiscoveryError(StvError):
    """The model's attention heads could not be found."""


@dataclass
class HeadMap:
    """The text decoder's attention output projections, one per layer."""

    projections: list[nn.Linear]
    num_heads: int
    head_dim: int
    decoder: nn.Module | None = None

    @property
    def num_layers(self) -> int:
        """Number of layers with attention heads."""
        return len(self.projections)

    def all_locations(self) -> list[Location]:
        """Every (layer, head), layer-major."""
        return [(layer, h) for layer in range(self.num_layers) for h in range(self.num_heads)]

    def random_locations(self, k: int, rng: np.random.Generator) -> list[Location]:
        """``k`` distinct (layer, head) pairs drawn by ``rng`` (every head when ``k`` exceeds them)."""
        every = self.all_locations()
        return [every[i] for i in rng.choice(len(every), min(k, len(every)), replace=False)]

    def check(self, locations: Sequence[Location]) -> list[Location]:
        """Validate and normalise a list of (layer, head) pairs."""
        out = []
        for loc in locations:
            layer, head = int(loc[0]), int(loc[1])
            if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
                raise StvError(
                    f"location (layer={layer}, head={head}) is outside this model's "
                    f"{self.num_layers} layers x {self.num_heads} heads"
                )
            out.append((layer, head))
        return out

    @classmethod
    def from_model(cls, model: nn.Module, pattern: str | None = None, num_heads: int | None = None) -> "HeadMap":
        """Find the heads of ``model``.

        Default: ``model.get_decoder().layers[i].self_attn.o_proj`` (the text decoder only, so
        vision towers and Idefics2's perceiver, which also have ``o_proj``, are never touched).
        ``pattern`` such as ``"transformer.h.{layer}.attn.c_proj"`` overrides discovery.
        """
        config = getattr(model, "config", None)
        text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
        heads = num_heads or getattr(text_config, "num_attention_heads", None) or getattr(text_config, "n_head", None)
        decoder = None
        if pattern is not None:
            projections = _projections_by_pattern(model, pattern)
        else:
            decoder, projections = _decoder_projections(model)
        if not projections:
            raise HeadDiscoveryError(f"{type(model).__name__} has no attention heads in its decoder")
        if not heads:
            raise HeadDiscoveryError(
                f"cannot tell the number of attention heads of {type(model).__name__}; pass num_heads"
            )
        widths = {_in_features(p) for p in projections}
        width = next(iter(widths))
        if len(widths) != 1 or width is None or width % heads:
            raise HeadDiscoveryError(
                f"the output projections of {type(model).__name__} have input widths {sorted(map(str, widths))}, "
                f"which cannot be split into {heads} heads of equal size"
            )
        expected = getattr(text_config, "head_dim", None) or (
            getattr(text_config, "hidden_size", 0) // int(heads) if getattr(text_config, "hidden_size", None) else None
        )
        if pattern is not None and expected and width != int(heads) * expected:
            raise HeadDiscoveryError(
                f"--heads-pattern {pattern!r} matches layers with {width} inputs, not {heads} heads x {expected}; "
                "point it at each layer's attention output projection (e.g. 'model.layers.{layer}.self_attn.o_proj')"
            )
        return cls(list(projections), int(heads), width // heads, decoder)


def _projections_by_pattern(model: nn.Module, pattern: str) -> list[nn.Module]:
    """The modules ``pattern.format(layer=0, 1, ...)`` names, until one is missing."""
    if "{layer}" not in pattern:
        raise HeadDiscoveryError(f"module pattern {pattern!r} must contain '{{layer}}'")
    modules = dict(model.named_modules())
    projections: list[nn.Module] = []
    while pattern.format(layer=len(projections)) in modules:
        projections.append(modules[pattern.format(layer=len(projections))])
    if not projections:
        raise HeadDiscoveryError(
            f"module pattern {pattern!r} matched nothing in {type(model).__name__}; "
            f"check the path with `print(model)` (e.g. 'transformer.h.{{layer}}.attn.c_proj')"
        )
    return projections


def _decoder_projections(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """(text decoder, its layers' ``self_attn.o_proj``), through ``model.get_decoder()``."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    layers = getattr(decoder, "layers", None) if decoder is not None else None
    if decoder is None or layers is None:
        raise HeadDiscoveryError(
            f"no text-decoder layers found in {type(model).__name__} (model.get_decoder().layers); "
            "pass an explicit module pattern, e.g. --heads-pattern 'transformer.h.{layer}.attn.c_proj'"
        )
    projections = []
    for i, layer in enumerate(layers):
        proj = getattr(getattr(layer, "self_attn", None), "o_proj", None)
        if proj is None:
            raise HeadDiscoveryError(
                f"decoder layer {i} of {type(model).__name__} has no self_attn.o_proj; "
                "pass an explicit module pattern for this architecture"
            )
        projections.append(proj)
    return decoder, projections


def _in_features(proj: nn.Module) -> int | None:
    """Input width of nn.Linear, or of a GPT-2 style Conv1D (weight stored as (in, out))."""
    if isinstance(proj, nn.Linear):
        return proj.in_features
    if type(proj).__name__ == "Conv1D" and hasattr(proj, "nf"):
        return proj.weight.shape[0]
    return None
