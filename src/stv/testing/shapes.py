"""Real-size model shapes built offline: Qwen2-VL-7B and Idefics2-8B from their published
configs with random weights and a small tokenizer trained here, for the GPU benchmark
(`stv bench --device cuda`). ``tiny=True`` gives the same code path at a few MB."""

from __future__ import annotations

from typing import Callable

import torch

from ..models import LMM


def _qwen2_vl_7b(tiny: bool = False):
    """Qwen/Qwen2-VL-7B-Instruct's config (28 layers x 28 heads of 128, 4 KV heads, vocab
    152,064; a 32-layer 1280-wide ViT with 2x2 merging): a 448x448 image is 256 tokens."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    from ..models.processors import without_video
    from .families import _QWEN_SPECIAL, _chat_template, _ids, build_tokenizer

    tok = build_tokenizer(_QWEN_SPECIAL)
    start, end, image, video = _ids(tok, *_QWEN_SPECIAL)
    bos, eos, pad = _ids(tok, tok.bos_token, tok.eos_token, tok.pad_token)
    text: dict = dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    )
    vision: dict = dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, patch_size=14)
    if tiny:  # same code path, a few MB: for tests and a first check of a new machine
        text.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
        text.update(num_key_value_heads=2, vocab_size=1024)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}
        vision.update(depth=1, embed_dim=32, hidden_size=128, num_heads=2)
    config = transformers.Qwen2VLConfig(
        text_config={**text, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad},
        vision_config=vision,
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    images = Qwen2VLImageProcessorPil(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
    )
    chat = _chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    processor = without_video("Qwen2VLProcessor")(image_processor=images, tokenizer=tok, chat_template=chat)
    return transformers.Qwen2VLForConditionalGeneration, config, processor


def _idefics2_8b(tiny: bool = False):
    """HuggingFaceM4/idefics2-8b's config (Mistral-7B: 32 layers x 32 heads of 128, 8 KV
    heads; SigLIP-so400m at 980 px, patches of 14; a 3-layer perceiver to 64 latents): 64
    tokens per image (no image splitting)."""
    import transformers

    from .families import _chat_template, _ids, build_tokenizer

    tok = build_tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        extra={
            "image_token": "<image>",
            "image_boundary_token": "<fake_token_around_image>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    bos, eos, pad, image = _ids(tok, tok.bos_token, tok.eos_token, tok.pad_token, "<image>")
    text = dict(
        model_type="mistral",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32003,
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        sliding_window=4096,
    )
    vision = dict(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=980
    )
    perceiver = dict(hidden_size=4096)
    if tiny:
        text.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
        text.update(num_key_value_heads=2, vocab_size=1024)
        vision.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        perceiver = dict(
            hidden_size=128, resampler_depth=1, resampler_n_heads=2, resampler_head_dim=16, num_key_value_heads=1
        )
    config = transformers.Idefics2Config(
        vision_config={**vision, "patch_size": 14},
        perceiver_config={**perceiver, "resampler_n_latents": 64},
        text_config={**text, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad},
        image_token_id=image,
    )
    images = transformers.Idefics2ImageProcessorPil(
        do_image_splitting=False, size={"shortest_edge": 378, "longest_edge": 980}
    )
    processor = transformers.Idefics2Processor(
        images, tokenizer=tok, image_seq_len=64, chat_template=_chat_template("<image>")
    )
    return transformers.Idefics2ForConditionalGeneration, config, processor


SHAPES: dict[str, Callable] = {"qwen2-vl-7b": _qwen2_vl_7b, "idefics2-8b": _idefics2_8b}


def build_shape(
    name: str,
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    tiny: bool = False,
    init_std: float | None = None,
) -> LMM:
    """A randomly initialised model of shape ``name`` built directly on ``device``
    (``init_std``: the weights' standard deviation, by default the config's 0.02)."""
    cls, config, processor = SHAPES[name](tiny)
    if init_std is not None:
        for part in (
            config,
            *(getattr(config, k) for k in ("text_config", "vision_config", "perceiver_config") if hasattr(config, k)),
        ):
            part.initializer_range = init_std
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(config, dtype=dtype)
    return LMM.from_model(model, processor, name=f"{name} (random {str(dtype).removeprefix('torch.')} weights)")
