"""The tiny model families: one builder per architecture, each returning (model, processor)
with a tokenizer trained here, so nothing is downloaded."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Callable

import torch

_CORPUS = [
    "the type of flower bird texture in image what is answer question a b c d option letter",
    "from given choice directly understand examples if can not be answered respond unanswerable",
    " ".join(string.ascii_letters),
    " ".join(str(i) for i in range(100)),
    "even odd small big yes no . , ? : !",
]
_WIDTH = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)


def _chat_template(
    image: str, user: str = "<|user|>\n", assistant: str = "<|assistant|>\n", end: str = "<|end|>\n"
) -> str:
    return (
        "{% for m in messages %}{{ '"
        + user.replace("\n", "\\n")
        + "' if m['role'] == 'user' else '"
        + assistant.replace("\n", "\\n")
        + "' }}"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '" + end.replace("\n", "\\n") + "' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + assistant.replace("\n", "\\n") + "' }}{% endif %}"
    )


def build_tokenizer(
    special: list[str],
    bos: str = "<s>",
    eos: str = "</s>",
    pad: str = "<pad>",
    vocab_size: int = 400,
    extra: dict | None = None,
):
    """A byte-level BPE tokenizer trained on a small corpus, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    base = ["<unk>", pad, bos, eos, "<|user|>", "<|assistant|>", "<|end|>"]
    specials = list(dict.fromkeys(base + special))
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(_CORPUS * 20, trainer)
    tk.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tk.token_to_id(bos))]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=extra or {},
    )
    tok.padding_side = "left"
    return tok


def _ids(tok, *names: str) -> list[int]:
    return [tok.convert_tokens_to_ids(n) for n in names]


def _text_config(tok, **over) -> dict:
    bos, eos, pad = _ids(tok, tok.bos_token, tok.eos_token, tok.pad_token)
    return {**_WIDTH, "vocab_size": len(tok), "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, **over}


def _llava(siglip: bool):
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    tok = build_tokenizer(["<image>"], extra={"image_token": "<image>"})
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    if siglip:
        vcfg, proc, extra, strategy = (
            SiglipVisionConfig(**vision),
            SiglipImageProcessorPil(size={"height": 32, "width": 32}),
            0,
            "full",
        )
    else:
        vcfg, proc, extra, strategy = (
            CLIPVisionConfig(**vision),
            CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
            1,
            "default",
        )
    config = LlavaConfig(
        vision_config=vcfg,
        text_config=LlamaConfig(**_text_config(tok)),
        image_token_id=_ids(tok, "<image>")[0],
        vision_feature_select_strategy=strategy,
        vision_feature_layer=-1,
        image_seq_length=16,
    )
    processor = LlavaProcessor(
        image_processor=proc,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=extra,
        chat_template=_chat_template("<image>"),
    )
    return LlavaForConditionalGeneration(config), processor


def _text_only(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer([])
    tok.chat_template = _chat_template("")
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**_text_config(tok))), tok
    return Qwen2ForCausalLM(Qwen2Config(**_text_config(tok))), tok


_QWEN_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _qwen_vl(kind: str):
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    from ..models.processors import without_video

    tok = build_tokenizer(_QWEN_SPECIAL)
    start, end, image, video = _ids(tok, *_QWEN_SPECIAL)
    # head_dim 16 -> mrope sections must sum to head_dim / 2
    text = _text_config(
        tok, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    )
    vision: dict[str, object] = dict(
        depth=1, hidden_size=32, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2, in_channels=3
    )
    if kind == "qwen2_vl":
        cfg_cls, model_cls, proc_name = "Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"
        vision.update(embed_dim=32, hidden_size=64, mlp_ratio=2)
    elif kind == "qwen2_5_vl":
        cfg_cls, model_cls, proc_name = "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"
        vision.update(intermediate_size=64, out_hidden_size=64, window_size=32, fullatt_block_indexes=[0])
    else:
        cfg_cls, model_cls, proc_name = "Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"
        vision.update(
            intermediate_size=64, out_hidden_size=64, num_position_embeddings=16, deepstack_visual_indexes=[0]
        )
        text.update(
            head_dim=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        )
    config = getattr(transformers, cfg_cls)(
        text_config=text,
        vision_config=vision,
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    # 32x32 images -> 4x4 patches of 8 -> 2x2 merged tokens
    processor_images = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 32 * 32, "longest_edge": 64 * 64}
    )
    chat = _chat_template("<|vision_start|><|image_pad|><|vision_end|>")
    processor = without_video(proc_name)(image_processor=processor_images, tokenizer=tok, chat_template=chat)
    return getattr(transformers, model_cls)(config), processor


def _idefics(version: int):
    import transformers

    tok = build_tokenizer(
        ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"],
        extra={
            "image_token": "<image>",
            "image_boundary_token": "<fake_token_around_image>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    image_id = _ids(tok, "<image>")[0]
    chat = _chat_template("<image>")
    if version == 2:
        perceiver = dict(
            hidden_size=64,
            resampler_n_latents=4,
            resampler_depth=1,
            resampler_n_heads=2,
            resampler_head_dim=16,
            num_key_value_heads=1,
        )
        config = transformers.Idefics2Config(
            vision_config=vision,
            perceiver_config=perceiver,
            text_config={"model_type": "mistral", **_text_config(tok)},
            image_token_id=image_id,
        )
        images = transformers.Idefics2ImageProcessorPil(
            do_image_splitting=False, size={"shortest_edge": 32, "longest_edge": 32}
        )
        processor = transformers.Idefics2Processor(images, tokenizer=tok, image_seq_len=4, chat_template=chat)
        return transformers.Idefics2ForConditionalGeneration(config), processor
    config = transformers.Idefics3Config(
        vision_config=vision,
        text_config={"model_type": "llama", **_text_config(tok)},
        image_token_id=image_id,
        scale_factor=2,
    )
    images = transformers.Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    processor = transformers.Idefics3Processor(images, tokenizer=tok, image_seq_len=4, chat_template=chat)
    return transformers.Idefics3ForConditionalGeneration(config), processor


def _gemma3():
    import transformers

    tok = build_tokenizer(
        ["<start_of_image>", "<end_of_image>", "<image_soft_token>"],
        extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )
    boi, eoi, image = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    text = _text_config(tok, head_dim=16, query_pre_attn_scalar=16, sliding_window=64)
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    config = transformers.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image,
    )
    images = transformers.Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = transformers.Gemma3Processor(
        images, tok, chat_template=_chat_template("<start_of_image>"), image_seq_length=4
    )
    return transformers.Gemma3ForConditionalGeneration(config), processor


def _llava_onevision():
    import transformers

    from ..models.processors import without_video

    tok = build_tokenizer(["<image>", "<video>"], extra={"image_token": "<image>", "video_token": "<video>"})
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    image, video = _ids(tok, "<image>", "<video>")
    config = transformers.LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", **vision},
        text_config={"model_type": "qwen2", **_text_config(tok)},
        image_token_index=image,
        video_token_index=video,
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_1",
    )
    images = transformers.LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]]
    )
    processor = without_video("LlavaOnevisionProcessor")(
        image_processor=images,
        tokenizer=tok,
        chat_template=_chat_template("<image>"),
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_1",
    )
    return transformers.LlavaOnevisionForConditionalGeneration(config), processor


FAMILIES: dict[str, Callable] = {
    "idefics2": lambda: _idefics(2),
    "idefics3": lambda: _idefics(3),
    "gemma3": _gemma3,
    "llava_onevision": _llava_onevision,
    "qwen2_vl": lambda: _qwen_vl("qwen2_vl"),
    "qwen2_5_vl": lambda: _qwen_vl("qwen2_5_vl"),
    "qwen3_vl": lambda: _qwen_vl("qwen3_vl"),
    "llava": lambda: _llava(siglip=False),
    "llava_siglip": lambda: _llava(siglip=True),
    "llama": lambda: _text_only("llama"),
    "qwen2": lambda: _text_only("qwen2"),
}


def build(family: str, out: str | Path, seed: int = 0) -> Path:
    """Write a tiny random model of ``family`` (model + processor) into ``out``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    model, processor = FAMILIES[family]()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
