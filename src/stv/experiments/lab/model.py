"""The lab model's architecture, tokenizer, processor and prompt format.

A stock ``LlavaForConditionalGeneration``: a 1-layer CLIP vision tower that sees a 16x16
digit as one patch (one image token per digit, which keeps episodes of 33 items short
enough to train in minutes) and a 4-layer Llama decoder, 128 wide with 4 heads of 32
(in our trials, heads narrower than 32 never learned to match a query against distant demos).
Nothing in the pipeline treats it specially: it is saved with ``save_pretrained`` and
loaded with ``stv.load_model`` like any user model.
"""

from __future__ import annotations

from pathlib import Path

from ...data.digits import DIGIT_TASKS, RANDOM_LABELS
from ...errors import StvError

LAB_CHECKPOINT = Path(__file__).parent / "checkpoint"
IMAGE_SIZE, PATCH = 16, 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
SEP = "="
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]


def vocabulary() -> list[str]:
    """The lab tokenizer's words: task names, digits, answers and separators."""
    answers = sorted({w for t in DIGIT_TASKS.values() for w in t.vocabulary} | set(RANDOM_LABELS))
    return SPECIALS + [SEP] + answers


def build_tokenizer():
    """The lab's word-level tokenizer, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tok.padding_side = "left"
    tok.chat_template = (
        "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    )
    return tok


def build_lab_model(hidden: int = 128, layers: int = 4, heads: int = 4, seed: int = 0):
    """A fresh, randomly initialised lab model and its processor."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    tok = build_tokenizer()
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        rope_theta=1e6,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=IMAGE_TOKENS,
        tie_word_embeddings=True,
    )
    processor = square_image_processor(tok, IMAGE_SIZE, PATCH)
    return LlavaForConditionalGeneration(config), processor


def square_image_processor(
    tokenizer,
    image_size: int,
    patch: int,
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
):
    """A LlavaProcessor for one ``image_size`` square image cut into ``patch``-sized patches
    (pixels normalised by ``mean`` and ``std``: [-1, 1] by default); ``tokenizer`` must know
    the ``<image>`` token."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    images = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(mean),
        image_std=list(std),
        resample=2,
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )


def load_lab(path: str | Path | None = None, **kwargs):
    """The shipped lab checkpoint (or another folder), through the ordinary loader."""
    from ...models import load_model

    path = Path(path) if path else LAB_CHECKPOINT
    if not (path / "config.json").is_file():
        raise StvError(f"no lab checkpoint at {path}; train one with `stv lab train --out {path}`")
    return load_model(path, **kwargs)
