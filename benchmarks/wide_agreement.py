"""Naive vs prefix-cached REINFORCE scoring at Qwen2-7B's width, on the CPU.

A text-only Qwen2 with Qwen2-VL-7B's hidden size, MLP ratio and head layout (28 heads of 128,
4 KV heads) but 6 layers, random weights; 4 candidates each write 64 random heads at the
prompt's last token. Prints the relative logits difference between one forward per
candidate and the fanned-out batch after a cached prefix, in float64, float32 and bfloat16.
`python benchmarks/wide_agreement.py` (about 3 minutes, 16 GB of RAM for float64).
"""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from stv.experiments.bench_gpu import agreement
from stv.models import LMM
from stv.testing.families import _chat_template, build_tokenizer

torch.set_num_threads(1)
tok = build_tokenizer([])
tok.chat_template = _chat_template("")
text = " ".join(str(i) for i in range(60)) + " even odd :"
for dtype in (torch.float64, torch.float32, torch.bfloat16):
    config = Qwen2Config(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=6,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    lmm = LMM.from_model(Qwen2ForCausalLM._from_config(config, dtype=dtype), tok)
    result = agreement(lmm, samples=4, heads=64, prompt=text)
    print(f"{result['dtype']}: {result['tokens']} tokens, relative logits difference {result['logits_rel_err']:.2e}")
    del lmm
