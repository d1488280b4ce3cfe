"""A tiny random Llama written as a GGUF file, laid out as llama.cpp writes one."""

from __future__ import annotations

from pathlib import Path

import torch

from .families import _text_only


def write_tiny_gguf(path: str | Path, seed: int = 0):
    """Write a tiny random Llama as a float32 GGUF file, the way llama.cpp lays one out
    (tensor names, q/k rows permuted for its RoPE, a byte-level BPE vocabulary).

    Returns ``(path, model, tokenizer)`` so a test can compare what a loader reads back with
    the source model, without the 98 MB real file.
    """
    import json

    import gguf

    torch.manual_seed(seed)
    model, tok = _text_only("llama")
    model.eval()
    cfg = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_vocab_size(cfg.vocab_size)
    state = json.loads(tok.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    special = set(tok.all_special_tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3 = control, 1 = normal
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)
    writer.add_add_bos_token(True)

    def permute(w: torch.Tensor, heads: int) -> torch.Tensor:  # HF rotary halves -> llama.cpp interleaved
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().float()
        if name.startswith("model.layers."):
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            if module == "self_attn.q_proj":
                tensor = permute(tensor, cfg.num_attention_heads)
            elif module == "self_attn.k_proj":
                tensor = permute(tensor, cfg.num_key_value_heads)
            gguf_name = f"blk.{layer}.{per_layer[module]}.{kind}"
        else:
            gguf_name = names[name]
        writer.add_tensor(gguf_name, tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, model, tok
