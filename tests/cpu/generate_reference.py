#!/usr/bin/env python3
"""`tandem generate` against an independent PyTorch reference.

Trains a tiny model (LLaMA- or GPT-2-style, tests/cpu/train_equality.py) with `tandem train
--backend cpu --save` on one rank and once more in a parallel layout (--layout: TP2 or PP2, whose
checkpoint holds each tensor in shards), then for each checkpoint:

1. reads the checkpoint files itself (format: backends/executor/checkpoint.cpp — per rank file a
   magic, a version, a piece count, then per piece a JSON header naming the tensor, its full
   shape, its shard rule and flat range, and fp32 values / exp_avg / exp_avg_sq) and assembles
   every full tensor from the pieces;
2. decodes greedily in float64 without any cache: a full forward over the whole sequence at every
   step (the layer math of tests/cpu/torch_model_reference.py: Megatron's fused QKV per query
   group, rotate-half RoPE, SwiGLU or GeLU, pre-norm blocks, tied or untied output), choosing the
   argmax among the real vocabulary ids;
3. requires tandem's greedy tokens to equal the reference's, the logits of the last step to agree
   to 1e-5 (max |diff| / max |logit|) and the per-token log-probabilities to 1e-5;
4. requires the layout checkpoint's greedy tokens to equal the one-rank checkpoint's;
5. exports the one-rank checkpoint to Hugging Face (`tandem export --format hf`) and requires
   `tandem generate --hf DIR` to give the reference's greedy tokens and the same tokens, logits and
   log-probabilities as `--load` (the same weights through another reader: bit for bit);
6. samples with temperature, top-k and top-p and checks, step by step on tandem's own tokens, that
   each sampled token lies in the set the reference allows (the k most likely, then the smallest
   nucleus of probability >= p of softmax(logits / T)).

Exit 77 (skipped) without torch.

usage: generate_reference.py --tandem BIN --model llama|gpt --layout tp2|pp2"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_equality import MODELS  # noqa: E402

try:
    import torch
except ImportError:
    print("PyTorch is not installed: skipped")
    sys.exit(77)
from torch_model_reference import layer, norm  # noqa: E402

TOL = 1e-5   # float32 decoding agrees to ~2e-7; GeLU erf in place of tanh already misses by 2.5e-5
TRAINING = ("--micro-batch-size 1 --global-batch-size 8 --train-iters 40 --lr 3e-3 --min-lr 1e-4 "
            "--lr-decay-style cosine --lr-warmup-iters 2 --seed 1234 --init-method-std 0.02 --mock-data "
            "--hidden-dropout 0 --attention-dropout 0 --clip-grad 1.0 --weight-decay 0.1 --log-interval 10 "
            "--eval-interval 40 --eval-iters 1 --save-interval 40")
LAYOUTS = {"tp2": "--tensor-model-parallel-size 2", "pp2": "--pipeline-model-parallel-size 2"}
PROMPT = [3, 5, 7, 9, 11]
NEW_TOKENS = 20


def run(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"exit {proc.returncode}: {' '.join(cmd)}")
    return proc.stdout


def train(tandem, model, ranks, layout, ck):
    cmd = [tandem, "train", "--backend", "cpu", "--ranks", str(ranks), "--"]
    cmd += (MODELS[model] + " " + TRAINING + " " + layout).split() + ["--save", ck]
    run(cmd)


# ---- the checkpoint, read independently ----------------------------------------------------

def local_shape(h):
    rows, cols, parts, kind = h["rows"], h["cols"], h["parts"], h["shard"]
    if kind == "rows":
        return rows // parts, cols
    if kind in ("columns", "gated-columns"):
        return rows, cols // parts
    return rows, cols


def full_positions(h, lr, lc):
    """Row and column in the full tensor of every (r, c) of the shard, as index arrays [lr, lc]."""
    r = torch.arange(lr)[:, None].expand(lr, lc)
    c = torch.arange(lc)[None, :].expand(lr, lc)
    kind, part = h["shard"], h["part"]
    if kind == "rows":
        r = r + part * lr
    elif kind == "columns":
        c = c + part * lc
    elif kind == "gated-columns":   # local [gate block | up block] of the full [gate | up]
        half = lc // 2
        c = torch.where(c < half, part * half + c, h["cols"] // 2 + part * half + (c - half))
    return r, c


def read_checkpoint(ck):
    with open(os.path.join(ck, "latest_checkpointed_iteration.txt")) as f:
        it = int(f.read())
    d = os.path.join(ck, f"iter_{it:07d}")
    with open(os.path.join(d, "metadata.json")) as f:
        meta = json.load(f)
    full, filled = {}, {}
    for entry in meta["files"]:
        with open(os.path.join(d, entry["name"]), "rb") as f:
            data = f.read()
        assert data[:8] == b"TANDEMCK", entry["name"]
        (count,) = struct.unpack_from("<Q", data, 12)
        at = 20
        for _ in range(count):
            (hlen,) = struct.unpack_from("<I", data, at)
            h = json.loads(data[at + 4:at + 4 + hlen])
            at += 4 + hlen
            n = h["end"] - h["begin"]
            values = torch.frombuffer(bytearray(data[at:at + 4 * n]), dtype=torch.float32).to(torch.float64)
            at += 12 * n   # values, exp_avg, exp_avg_sq
            lr, lc = local_shape(h)
            rows, cols = full_positions(h, lr, lc)
            assert not h["expert"] and h["end"] <= lr * lc, "dense tensors only: one block per piece"
            flat = torch.arange(h["begin"], h["end"])
            name = h["name"]
            if name not in full:
                full[name] = torch.zeros(h["rows"], h["cols"], dtype=torch.float64)
                filled[name] = torch.zeros(h["rows"], h["cols"], dtype=torch.bool)
            rr, cc = rows.reshape(-1)[flat], cols.reshape(-1)[flat]
            full[name][rr, cc] = values
            filled[name][rr, cc] = True
    for name, f in filled.items():
        assert bool(f.all()), f"tensor {name} is not fully covered by the pieces"
    return meta["job"], full


# ---- the reference model -------------------------------------------------------------------

def config(job):
    m = job["model"]
    return {"num_layers": m["num_layers"], "num_attention_heads": m["num_attention_heads"],
            "num_query_groups": m["num_query_groups"] or m["num_attention_heads"],
            "head_dim": m["kv_channels"] or m["hidden_size"] // m["num_attention_heads"],
            "rope": m["position_embedding_type"] == "rope", "learned_positions":
            m["position_embedding_type"] == "learned_absolute", "rotary_base": m["rotary_base"],
            "normalization": m["normalization"], "norm_epsilon": m["norm_epsilon"], "swiglu": m["swiglu"],
            "gelu_tanh": m["add_bias_linear"], "tied_embeddings": not m["untie_embeddings_and_output_weights"],
            "hidden_dropout": 0.0, "attention_dropout": 0.0, "vocab_size": m["vocab_size"]}


def weights(full):
    """1-D tensors (norm gains, biases: [1, C] in the checkpoint) as [C]."""
    return {n: t[0] if t.shape[0] == 1 else t for n, t in full.items()}


def logits_of(cfg, P, tokens):
    """Logits [padded V] of the last position after a full forward over `tokens` (no cache)."""
    s = len(tokens)
    positions = torch.arange(s)
    x = P["embedding.word"][torch.tensor(tokens)]
    if cfg["learned_positions"]:
        x = x + P["embedding.position"][positions]
    for i in range(cfg["num_layers"]):
        x = layer(cfg, P, i, x, positions, list(range(s)), 0)
    x = norm(cfg, x, P["final_norm.weight"], P.get("final_norm.bias"))
    w = P["embedding.word"] if cfg["tied_embeddings"] else P["output.weight"]
    return x[-1] @ w.t()


def greedy(cfg, P, prompt, steps):
    """Greedy tokens, their log-probabilities, the last step's logits and the smallest top-2 margin."""
    seq, out, logprobs, last, margin = list(prompt), [], [], None, float("inf")
    for _ in range(steps):
        last = logits_of(cfg, P, seq)[:cfg["vocab_size"]]
        top2 = torch.topk(last, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        tok = int(torch.argmax(last))
        out.append(tok)
        logprobs.append(float(torch.log_softmax(last, -1)[tok]))
        seq.append(tok)
    return out, logprobs, last, margin


def allowed(logits, temperature, top_k, top_p):
    """The ids a temperature/top-k/top-p sampler may draw (k largest, then the nucleus)."""
    order = torch.argsort(logits, descending=True, stable=True)
    if 0 < top_k < len(order):
        order = order[:top_k]
    p = torch.softmax(logits[order] / temperature, -1)
    before = torch.cumsum(p, -1) - p   # probability of the more likely candidates
    keep = before < top_p + 1e-9
    return set(int(i) for i in order[keep])


# ---- checks --------------------------------------------------------------------------------

def generate(tandem, ck, out, extra=(), source="--load"):
    run([tandem, "generate", source, ck, "--prompt-ids", ",".join(map(str, PROMPT)), "--max-new-tokens",
         str(NEW_TOKENS), "--json", out, *extra])
    with open(out) as f:
        return json.load(f)


def relative(a, b):
    a, b = torch.tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max())


def check(cond, what, failures):
    print(("ok: " if cond else "FAILED: ") + what)
    if not cond:
        failures.append(what)


def check_checkpoint(tandem, ck, name, tmp, failures):
    job, full = read_checkpoint(ck)
    cfg, P = config(job), weights(full)
    got = generate(tandem, ck, os.path.join(tmp, name + ".json"))
    ref_tokens, ref_logprobs, ref_last, margin = greedy(cfg, P, PROMPT, NEW_TOKENS)
    check(got["generated_ids"] == ref_tokens, f"{name}: greedy tokens equal the PyTorch reference's "
          f"{ref_tokens}", failures)
    err = relative(got["last_logits"][:cfg["vocab_size"]], ref_last)
    check(err <= TOL, f"{name}: last-step logits within {err:.1e} of the reference (tolerance {TOL:g})", failures)
    lp = max(abs(a - b) for a, b in zip(got["logprobs"], ref_logprobs))
    check(lp <= TOL, f"{name}: per-token log-probabilities within {lp:.1e}", failures)
    print(f"   (smallest top-2 logit margin over the reference's steps: {margin:.3e})")
    return got, cfg, P, ref_tokens, ref_last


def check_hf(tandem, ck, got, ref_tokens, ref_last, tmp, failures):
    hf = os.path.join(tmp, "hf")
    run([tandem, "export", "--load", ck, "--format", "hf", "--out", hf])
    from_hf = generate(tandem, hf, os.path.join(tmp, "from-hf.json"), source="--hf")
    check(from_hf["generated_ids"] == ref_tokens, f"--hf: greedy tokens equal the PyTorch reference's", failures)
    err = relative(from_hf["last_logits"][:len(ref_last)], ref_last)
    check(err <= TOL, f"--hf: last-step logits within {err:.1e} of the reference", failures)
    same = all(from_hf[k] == got[k] for k in ("generated_ids", "last_logits", "logprobs"))
    check(same, "--hf and --load of the same weights: identical tokens, logits and log-probabilities", failures)


def check_sampling(tandem, ck, cfg, P, tmp, failures):
    for temperature, top_k, top_p in [(0.8, 5, 1.0), (1.0, 0, 0.6), (1.5, 20, 0.9)]:
        got = generate(tandem, ck, os.path.join(tmp, "sample.json"),
                       ["--temperature", str(temperature), "--top-k", str(top_k), "--top-p", str(top_p),
                        "--seed", "7"])
        seq, outside = list(PROMPT), []
        for step, tok in enumerate(got["generated_ids"]):
            logits = logits_of(cfg, P, seq)[:cfg["vocab_size"]]
            if tok not in allowed(logits, temperature, top_k, top_p):
                outside.append((step, tok))
            seq.append(tok)
        check(not outside, f"sampling T={temperature} top-k={top_k} top-p={top_p}: every token "
              f"{got['generated_ids']} is one the reference allows {outside if outside else ''}", failures)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--model", choices=["llama", "gpt"], required=True)
    ap.add_argument("--layout", choices=sorted(LAYOUTS), required=True)
    args = ap.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        one, par = os.path.join(tmp, "ck1"), os.path.join(tmp, "ck-" + args.layout)
        train(args.tandem, args.model, 1, "", one)
        train(args.tandem, args.model, 2, LAYOUTS[args.layout], par)
        got1, cfg, P, ref_tokens, ref_last = check_checkpoint(args.tandem, one, f"{args.model} one rank", tmp,
                                                              failures)
        got2, *_ = check_checkpoint(args.tandem, par, f"{args.model} {args.layout}", tmp, failures)
        check(got2["generated_ids"] == got1["generated_ids"],
              f"{args.layout} checkpoint: the same greedy tokens as the one-rank checkpoint", failures)
        check_hf(args.tandem, one, got1, ref_tokens, ref_last, tmp, failures)
        check_sampling(args.tandem, one, cfg, P, tmp, failures)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
