#!/usr/bin/env python3
"""Training throughput of the CPU backend (`tandem train --backend cpu`) and its GEMMs.

Runs a small LLaMA-style model for a few iterations on each layout and reports the measured
tokens/s (iterations after the first), and — given the cpu_gemm_bench binary — tandem's GEMM
GFLOP/s against the machine's OpenBLAS sgemm on transformer-layer shapes (the issue's bar:
>= 60%). MPI ranks on one machine share its cores: each rank's GEMMs get cores / ranks threads.

usage: experiments/train_throughput.py --tandem build/tandem [--gemm-bench build/experiments/cpu_gemm_bench]
       [--hidden 256] [--layers 4] [--seq 256] [--iters 6] [--json FILE]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

LAYOUTS = [("1 rank", 1, ""), ("DP2", 2, ""), ("TP2", 2, "--tensor-model-parallel-size 2"),
           ("PP2 1f1b", 2, "--pipeline-model-parallel-size 2"), ("TP2+SP", 2, "--tensor-model-parallel-size 2 --sequence-parallel")]


def model_flags(a):
    heads = max(1, a.hidden // 64)
    return (f"--num-layers {a.layers} --hidden-size {a.hidden} --num-attention-heads {heads} --group-query-attention "
            f"--num-query-groups {max(1, heads // 2)} --seq-length {a.seq} --max-position-embeddings {a.seq} "
            f"--vocab-size 4096 --swiglu --normalization RMSNorm --position-embedding-type rope "
            f"--untie-embeddings-and-output-weights --disable-bias-linear --micro-batch-size 1 --global-batch-size 8 "
            f"--train-iters {a.iters} --lr 1e-4 --mock-data --hidden-dropout 0 --attention-dropout 0 --log-interval 1000")


def train(a, ranks, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [a.tandem, "train", "--backend", "cpu", "--json", out] + (["--ranks", str(ranks)] if ranks > 1 else [])
        cmd += ["--"] + (model_flags(a) + " " + extra).split()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            print(p.stdout)
            sys.exit(f"failed: {' '.join(cmd)}")
        with open(out) as f:
            return json.load(f)


def gemm_ratio(bench):
    p = subprocess.run([bench, "--benchmark_format=json", "--benchmark_min_time=0.2"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    runs = json.loads(p.stdout)["benchmarks"]
    by = {}
    for r in runs:
        impl, args = r["name"].split("/", 1)
        by.setdefault(args, {})[impl] = 2.0 * eval(args.replace("m:", "").replace("n:", "*").replace("k:", "*")
                                                   .split("/pass")[0].replace("/", "")) / (r["cpu_time"] * 1e-3)
    rows = []
    for args, v in by.items():
        if "openblas" in v:
            rows.append((args, v["tandem"] / 1e9, v["openblas"] / 1e9, v["tandem"] / v["openblas"]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--gemm-bench")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--json")
    a = ap.parse_args()
    os.environ.setdefault("TANDEM_MPIRUN", "mpirun")
    result = {"model": model_flags(a), "layouts": {}, "gemm": []}
    print(f"{'layout':<10} {'ranks':>5} {'tokens/s':>10} {'ms/iteration':>13}  (h {a.hidden}, {a.layers} layers, s {a.seq}, 8 sequences/iteration)")
    for name, ranks, extra in LAYOUTS:
        r = train(a, ranks, extra)
        ms = 1e3 * sum(r["iteration_times_s"][1:]) / max(1, len(r["iteration_times_s"]) - 1)
        result["layouts"][name] = {"ranks": ranks, "tokens_per_s": r["tokens_per_s"], "ms_per_iteration": ms}
        print(f"{name:<10} {ranks:>5} {r['tokens_per_s']:>10.0f} {ms:>13.1f}")
    if a.gemm_bench:
        print("\nGEMM (one thread): shape, tandem GFLOP/s, OpenBLAS GFLOP/s, ratio")
        for args, t, o, ratio in gemm_ratio(a.gemm_bench):
            result["gemm"].append({"shape": args, "tandem_gflops": t, "openblas_gflops": o, "ratio": ratio})
            print(f"  {args:<32} {t:8.1f} {o:8.1f} {ratio:6.2f}{'' if ratio >= 0.6 else '  below 0.6'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
