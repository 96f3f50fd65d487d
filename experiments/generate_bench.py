#!/usr/bin/env python3
"""Decoding speed of `tandem generate` with and without the KV cache.

Trains a small LLaMA-style model for one iteration (`tandem train --backend cpu --save`; the
weights only need the right shapes), then generates --new tokens greedily after a --prompt-token
prompt, once with the KV cache (each step runs one token through the layers) and once with
--no-kv-cache (each step runs the whole sequence again), and prints prefill time, decode tokens/s
and the speed-up. Both runs must produce the same tokens (checked; exit 1 otherwise).

usage: experiments/generate_bench.py --tandem build/tandem [--layers 4] [--hidden 256] [--positions 1024]
       [--prompt 16] [--new 300] [--threads 1] [--json FILE]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        print(p.stdout)
        sys.exit(f"failed: {' '.join(cmd)}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--positions", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="GEMM threads of tandem generate")
    ap.add_argument("--json")
    a = ap.parse_args()
    heads = max(1, a.hidden // 64)
    flags = (f"--num-layers {a.layers} --hidden-size {a.hidden} --num-attention-heads {heads} --group-query-attention "
             f"--num-query-groups {max(1, heads // 2)} --seq-length {a.positions} --max-position-embeddings {a.positions} "
             f"--vocab-size 4096 --swiglu --normalization RMSNorm --position-embedding-type rope "
             f"--untie-embeddings-and-output-weights --disable-bias-linear --micro-batch-size 1 --global-batch-size 1 "
             f"--train-iters 1 --lr 1e-4 --lr-warmup-iters 0 --mock-data --hidden-dropout 0 --attention-dropout 0 "
             f"--eval-iters 0")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        ck = os.path.join(tmp, "ck")
        run([a.tandem, "train", "--backend", "cpu", "--"] + flags.split() + ["--save", ck, "--save-interval", "1"])
        prompt = ",".join(str((7 * i + 3) % 4096) for i in range(a.prompt))
        for label, extra in [("KV cache", []), ("no KV cache", ["--no-kv-cache"])]:
            extra = extra + ["--threads", str(a.threads)]
            out = os.path.join(tmp, "g.json")
            run([a.tandem, "generate", "--load", ck, "--prompt-ids", prompt, "--max-new-tokens", str(a.new),
                 "--json", out] + extra)
            with open(out) as f:
                r = json.load(f)
            steps = len(r["generated_ids"]) - 1
            rows[label] = {"prefill_ms": r["prefill_s"] * 1e3, "decode_tokens_per_s": steps / r["decode_s"],
                           "decode_s": r["decode_s"], "tokens": r["generated_ids"]}
    same = rows["KV cache"]["tokens"] == rows["no KV cache"]["tokens"]
    print(f"model: {a.layers} layers, hidden {a.hidden}, {heads} heads ({max(1, heads // 2)} KV groups), vocab 4096; "
          f"prompt {a.prompt} tokens, {a.new} new tokens (greedy, one process, {a.threads} GEMM thread(s))")
    print(f"{'decoding':<12} {'prefill (ms)':>12} {'decode (s)':>10} {'tokens/s':>10}")
    for label, r in rows.items():
        print(f"{label:<12} {r['prefill_ms']:>12.2f} {r['decode_s']:>10.3f} {r['decode_tokens_per_s']:>10.1f}")
    speedup = rows["KV cache"]["decode_tokens_per_s"] / rows["no KV cache"]["decode_tokens_per_s"]
    print(f"KV cache speed-up: {speedup:.1f}x; same tokens with and without: {'yes' if same else 'NO'}")
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump({"rows": rows, "speedup": speedup, "same_tokens": same}, f, indent=2)
        os.replace(a.json + ".tmp", a.json)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
