#!/usr/bin/env python3
"""Writes a random LLaMA-family Hugging Face directory (config.json + model.safetensors, F32) for
benchmarks: an independent writer (numpy + json), normal(0, 0.02) weights, ones for the norms.

usage: make_hf_model.py OUT_DIR [--layers 4] [--hidden 1024] [--heads 16] [--kv-heads 4]
                        [--ffn 2816] [--vocab 32000] [--positions 2048] [--seed 0]"""
import argparse
import json
import os
import struct

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--positions", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    h, d = a.hidden, a.hidden // a.heads
    shapes = {"model.embed_tokens.weight": (a.vocab, h), "model.norm.weight": (h,), "lm_head.weight": (a.vocab, h)}
    for i in range(a.layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (a.heads * d, h), p + "self_attn.k_proj.weight": (a.kv_heads * d, h),
                       p + "self_attn.v_proj.weight": (a.kv_heads * d, h), p + "self_attn.o_proj.weight": (h, a.heads * d),
                       p + "mlp.gate_proj.weight": (a.ffn, h), p + "mlp.up_proj.weight": (a.ffn, h),
                       p + "mlp.down_proj.weight": (h, a.ffn), p + "input_layernorm.weight": (h,),
                       p + "post_attention_layernorm.weight": (h,)})
    rng = np.random.default_rng(a.seed)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(shapes):
        n = int(np.prod(shapes[name])) * 4
        header[name] = {"dtype": "F32", "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()   # compact, as safetensors writes it
    text += b" " * (-len(text) % 8)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(shapes):
            norm = name.endswith("norm.weight")
            t = np.ones(shapes[name], np.float32) if norm else rng.normal(0, 0.02, shapes[name]).astype(np.float32)
            f.write(t.astype("<f4").tobytes())
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
              "intermediate_size": a.ffn, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
              "head_dim": d, "num_hidden_layers": a.layers, "max_position_embeddings": a.positions,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": a.vocab, "tie_word_embeddings": False,
              "hidden_act": "silu", "torch_dtype": "float32"}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{a.out}: {len(shapes)} tensors, {offset / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
