#!/usr/bin/env python3
"""Hugging Face export and import, end to end, against an independent PyTorch model.

For a tiny LLaMA (RMSNorm, RoPE, SwiGLU, GQA, untied) or GPT-2 (LayerNorm, learned positions,
GeLU, biases, tied) model:

1. `tandem train` on 4 ranks (TP2 x PP2) for 3 iterations, saved;
2. `tandem export --format hf` (fp32); the safetensors are read here (own reader: JSON header +
   torch.frombuffer) into a PyTorch implementation of LlamaForCausalLM / GPT2LMHeadModel written
   from the published architectures (float64), whose logits on the tokens of iteration 4 must
   equal the logits tandem computes from the checkpoint (`tandem train --load --dump-first-step`,
   one rank) to 1e-4;
3. `--dtype bf16` holds exactly torch's round-to-nearest-even of the fp32 export;
4. import -> export is byte-identical, for fp32 in one file and for bf16 in shards;
5. the imported checkpoint loads in `tandem train --load`: on one rank its logits equal the
   reference's, and on TP2 its first loss equals the one-rank loss (1e-5);
6. the same family with the other embedding tying (tied LLaMA, untied GPT-2), trained on PP2:
   exported logits equal the reference's.

usage: hf_export_test.py --tandem BIN --model llama|gpt   (mpirun from $TANDEM_MPIRUN)
Exit 77 (skipped) without torch."""
import argparse
import filecmp
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cpu"))
from train_equality import MODELS  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("PyTorch is not installed: skipped")
    sys.exit(77)

TRAINING = ("--micro-batch-size 1 --global-batch-size 8 --lr 1e-3 --min-lr 1e-4 --lr-decay-style cosine "
            "--lr-warmup-iters 1 --seed 1234 --init-method-std 0.02 --mock-data --hidden-dropout 0 "
            "--attention-dropout 0 --clip-grad 1.0 --weight-decay 0.1 --log-interval 1 --eval-interval 1000 "
            "--eval-iters 1")
TOL = 1e-4


def run(cmd, what):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"FAILED: {what}: exit {proc.returncode}: {' '.join(cmd)}")
    return proc.stdout


def check(cond, what):
    if not cond:
        sys.exit("FAILED: " + what)
    print("ok:", what)


def train(tandem, model_flags, extra, ranks=None):
    cmd = [tandem, "train", "--backend", "cpu"] + (["--ranks", str(ranks)] if ranks else [])
    own, rest = [], []
    it = iter(extra)
    for a in it:   # tandem's own options go before "--"
        if a in ("--json", "--dump-first-step"):
            own += [a, next(it)]
        else:
            rest.append(a)
    return run(cmd + own + ["--"] + model_flags + TRAINING.split() + rest, "train " + " ".join(extra))


# ---- safetensors, read independently -------------------------------------------------------

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        begin, end = v["data_offsets"]
        t = torch.frombuffer(bytearray(raw[base + begin:base + end]), dtype=DTYPES[v["dtype"]])
        out[name] = t.reshape(v["shape"])
    return out


def read_hf_dir(d):
    index = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(d, f)))
    return json.load(open(os.path.join(d, "config.json"))), tensors


# ---- the two architectures, from their published definitions (float64) ---------------------

def causal_attention(q, k, v):
    """q [B, H, S, D], k/v [B, H, S, D] -> [B, S, H*D]."""
    s = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    ctx = probs @ v
    return ctx.transpose(1, 2).reshape(q.shape[0], s, -1)


def llama_logits(cfg, w, tokens):
    """LlamaForCausalLM: x [B, S] token ids -> logits [B, S, V]."""
    w = {k: t.double() for k, t in w.items()}
    B, S = tokens.shape
    a, g, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]

    def rms(x, gamma):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * gamma

    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(S, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rope(x):   # x [B, H, S, D]: x * cos + rotate_half(x) * sin
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = w["model.embed_tokens.weight"][tokens]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, S, a, d).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, S, g, d).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, S, g, d).transpose(1, 2)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(a // g, dim=1), v.repeat_interleave(a // g, dim=1)
        x = x + causal_attention(q, k, v) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return rms(x, w["model.norm.weight"]) @ head.T


def gpt2_logits(cfg, w, tokens):
    """GPT2LMHeadModel (Conv1D weights [in, out]): x [B, S] -> logits [B, S, V]."""
    w = {k: t.double() for k, t in w.items()}
    B, S = tokens.shape
    a, h_size = cfg["n_head"], cfg["n_embd"]
    d = h_size // a
    eps = cfg["layer_norm_epsilon"]

    def ln(x, p):
        return F.layer_norm(x, (h_size,), w[p + ".weight"], w[p + ".bias"], eps)

    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))

    x = w["transformer.wte.weight"][tokens] + w["transformer.wpe.weight"][torch.arange(S)][None]
    for layer in range(cfg["n_layer"]):
        p = f"transformer.h.{layer}."
        qkv = ln(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (t.view(B, S, a, d).transpose(1, 2) for t in qkv.split(h_size, dim=-1))
        x = x + causal_attention(q, k, v) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = gelu_new(ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    head = w["transformer.wte.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return ln(x, "transformer.ln_f") @ head.T


def reference_logits(hf_dir, tokens):
    cfg, w = read_hf_dir(hf_dir)
    fn = {"LlamaForCausalLM": llama_logits, "GPT2LMHeadModel": gpt2_logits}[cfg["architectures"][0]]
    return fn(cfg, w, tokens)


def tandem_logits(dump_path):
    """Tokens [B, S] and tandem's logits [B, S, V] of a first-step dump (micro-batch size 1)."""
    dump = json.load(open(dump_path))
    tokens = torch.tensor(dump["tokens"], dtype=torch.long)
    logits = torch.stack([torch.tensor(e["value"], dtype=torch.float64).view(e["shape"]) for e in dump["logits"]])
    return tokens, logits, dump["loss"]


def compare_logits(hf_dir, dump_path, what):
    tokens, ours, _ = tandem_logits(dump_path)
    ref = reference_logits(hf_dir, tokens)
    err = (ours - ref).abs().max().item()
    check(err <= TOL, f"{what}: logits [{', '.join(map(str, ours.shape))}] max |tandem - torch| = {err:.2e} "
                      f"(max |logit| {ref.abs().max().item():.3f}, tolerance {TOL:.0e})")


def same_files(a, b):
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return False, f"{names} vs {sorted(os.listdir(b))}"
    bad = [n for n in names if not filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False)]
    return not bad, f"{len(names)} files" + (f", differing: {bad}" if bad else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--model", choices=["llama", "gpt"], required=True)
    args = ap.parse_args()
    t, flags = args.tandem, MODELS[args.model].split()
    with tempfile.TemporaryDirectory() as tmp:
        p = lambda name: os.path.join(tmp, name)  # noqa: E731
        train(t, flags, ["--train-iters", "3", "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size",
                         "2", "--save", p("ck")], ranks=4)
        run([t, "export", "--load", p("ck"), "--format", "hf", "--out", p("hf")], "export fp32")
        check(not os.path.exists(p("hf.tmp")), "export left no DIR.tmp behind")
        train(t, flags, ["--train-iters", "4", "--load", p("ck"), "--dump-first-step", p("dump.json")])
        compare_logits(p("hf"), p("dump.json"), f"{args.model} trained on TP2 x PP2, exported")

        run([t, "export", "--load", p("ck"), "--format", "hf", "--out", p("hf-bf16"), "--dtype", "bf16"], "export bf16")
        _, w32 = read_hf_dir(p("hf"))
        cfg16, w16 = read_hf_dir(p("hf-bf16"))
        exact = all(torch.equal(w16[n].view(torch.int16), w32[n].to(torch.bfloat16).view(torch.int16)) for n in w32)
        check(exact and set(w16) == set(w32) and cfg16["torch_dtype"] == "bfloat16",
              f"bf16 export: all {len(w32)} tensors are torch's round-to-nearest-even of the fp32 export")

        run([t, "import", "--hf", p("hf"), "--save", p("ck-imported")], "import fp32")
        run([t, "export", "--load", p("ck-imported"), "--format", "hf", "--out", p("hf-again")], "export of the import")
        ok, detail = same_files(p("hf"), p("hf-again"))
        check(ok, f"export -> import -> export, fp32 in one file: byte-identical ({detail})")
        shard = ["--dtype", "bf16", "--max-shard-size", "100KB"]
        run([t, "export", "--load", p("ck"), "--format", "hf", "--out", p("hf-shards")] + shard, "export bf16 sharded")
        run([t, "import", "--hf", p("hf-shards"), "--save", p("ck-shards")], "import sharded")
        run([t, "export", "--load", p("ck-shards"), "--format", "hf", "--out", p("hf-shards-again")] + shard, "re-export")
        ok, detail = same_files(p("hf-shards"), p("hf-shards-again"))
        check(ok and len(os.listdir(p("hf-shards"))) > 3,
              f"export -> import -> export, bf16 in shards of 100KB: byte-identical ({detail})")

        train(t, flags, ["--train-iters", "2", "--load", p("ck-imported"), "--dump-first-step", p("dump-imported.json")])
        compare_logits(p("hf"), p("dump-imported.json"), "imported checkpoint loaded by tandem train (one rank)")
        train(t, flags, ["--train-iters", "2", "--load", p("ck-imported"), "--tensor-model-parallel-size", "2",
                         "--json", p("tp2.json")], ranks=2)
        one = tandem_logits(p("dump-imported.json"))[2]
        tp2 = json.load(open(p("tp2.json")))["losses"][0]
        check(abs(tp2 - one) <= 1e-5 * abs(one),
              f"imported checkpoint loaded on TP2: first loss {tp2:.7f} vs one rank {one:.7f}")

        untie = "--untie-embeddings-and-output-weights"
        other = [f for f in flags if f != untie] if untie in flags else flags + [untie]
        kind = "tied" if untie in flags else "untied"
        train(t, other, ["--train-iters", "2", "--pipeline-model-parallel-size", "2", "--save", p("ck-other")], ranks=2)
        run([t, "export", "--load", p("ck-other"), "--format", "hf", "--out", p("hf-other")], "export " + kind)
        cfg, w = read_hf_dir(p("hf-other"))
        check(cfg["tie_word_embeddings"] == (kind == "tied") and ("lm_head.weight" in w) == (kind == "untied"),
              f"{kind} {args.model}: tie_word_embeddings and lm_head.weight as Hugging Face writes them")
        train(t, other, ["--train-iters", "3", "--load", p("ck-other"), "--dump-first-step", p("dump-other.json")])
        compare_logits(p("hf-other"), p("dump-other.json"), f"{kind} {args.model} trained on PP2, exported")


if __name__ == "__main__":
    main()
