"""Tiny, randomly initialised but architecturally real models, built offline.

``python -m stv.testing build FAMILY DIR`` writes a model of that family with a working
processor, a tokenizer trained here and a chat template, loadable with ``stv.load_model(DIR)``.
They exist so every code path (hooks, rendering, generate, scoring) runs on the real
transformers classes without downloading anything.
"""

from __future__ import annotations

import argparse
import string
from pathlib import Path
from typing import Callable

import torch

_CORPUS = [
    "the type of flower bird texture in image what is answer question a b c d option letter",
    "from given choice directly understand examples if can not be answered respond unanswerable",
    " ".join(string.ascii_letters), " ".join(str(i) for i in range(100)), "even odd small big yes no . , ? : !",
]
_WIDTH = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096)


def _chat_template(image: str, user: str = "<|user|>\n", assistant: str = "<|assistant|>\n", end: str = "<|end|>\n") -> str:
    return (
        "{% for m in messages %}{{ '" + user.replace("\n", "\\n") + "' if m['role'] == 'user' else '"
        + assistant.replace("\n", "\\n") + "' }}"
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '" + end.replace("\n", "\\n") + "' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + assistant.replace("\n", "\\n") + "' }}{% endif %}"
    )


def build_tokenizer(special: list[str], bos: str = "<s>", eos: str = "</s>", pad: str = "<pad>",
                    vocab_size: int = 400, extra: dict | None = None):
    """A byte-level BPE tokenizer trained on a small corpus, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    base = ["<unk>", pad, bos, eos, "<|user|>", "<|assistant|>", "<|end|>"]
    specials = list(dict.fromkeys(base + special))
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_CORPUS * 20, trainer)
    tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                      special_tokens=[(bos, tk.token_to_id(bos))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token=bos, eos_token=eos,
                                  pad_token=pad, extra_special_tokens=extra or {})
    tok.padding_side = "left"
    return tok


def _ids(tok, *names: str) -> list[int]:
    return [tok.convert_tokens_to_ids(n) for n in names]


def _text_config(tok, **over) -> dict:
    bos, eos, pad = _ids(tok, tok.bos_token, tok.eos_token, tok.pad_token)
    return {**_WIDTH, "vocab_size": len(tok), "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, **over}


def _llava(siglip: bool):
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, SiglipImageProcessorPil,
                              SiglipVisionConfig)

    tok = build_tokenizer(["<image>"], extra={"image_token": "<image>"})
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    if siglip:
        vcfg, proc, extra, strategy = SiglipVisionConfig(**vision), SiglipImageProcessorPil(
            size={"height": 32, "width": 32}), 0, "full"
    else:
        vcfg, proc, extra, strategy = CLIPVisionConfig(**vision), CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), 1, "default"
    config = LlavaConfig(vision_config=vcfg, text_config=LlamaConfig(**_text_config(tok)),
                         image_token_id=_ids(tok, "<image>")[0], vision_feature_select_strategy=strategy,
                         vision_feature_layer=-1, image_seq_length=16)
    processor = LlavaProcessor(image_processor=proc, tokenizer=tok, patch_size=8,
                               vision_feature_select_strategy=strategy, num_additional_image_tokens=extra,
                               chat_template=_chat_template("<image>"))
    return LlavaForConditionalGeneration(config), processor


def _text_only(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer([])
    tok.chat_template = _chat_template("")
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**_text_config(tok))), tok
    return Qwen2ForCausalLM(Qwen2Config(**_text_config(tok))), tok


FAMILIES: dict[str, Callable] = {
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stv.testing", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the family names")
    b = sub.add_parser("build", help="write a tiny model of FAMILY into DIR")
    b.add_argument("family")
    b.add_argument("dir")
    b.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(FAMILIES))
    else:
        print(build(args.family, args.dir, args.seed))


if __name__ == "__main__":
    main()
