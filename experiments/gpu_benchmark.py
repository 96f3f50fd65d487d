#!/usr/bin/env python3
"""Real-GPU throughput of `tandem train --backend cuda` beside `tandem simulate` of the same job.

Two jobs, each a few iterations on synthetic data (--mock-data, bf16, no dropout):
  GPT-2 1.5B  (48 layers, hidden 1600, 25 heads, seq 1024, vocab 50257)  on 1 GPU
  LLaMA-3 8B  (models/presets/llama3-8b.json, seq 8192)                   on 8 GPUs, TP2 + SP,
              distributed optimizer, DP4
For each: tokens/s from the training JSON (iterations after the first), model TFLOP/s per GPU
(= model FLOPs per iteration from `tandem info --json`, per measured iteration time, per GPU),
MFU against the detected GPU's dense BF16 peak (clusters/*.json), and the simulator's figures for
the same job on that cluster. Targets: >= 45% MFU for GPT-2 1.5B on one H100, >= 40% for
LLaMA-3 8B on 8x H100.

Without an NVIDIA GPU it says so in one line and exits with status 2.

usage: /usr/bin/python3 experiments/gpu_benchmark.py [--tandem build/tandem] [--iters 10]
       [--only gpt2-1.5b|llama3-8b] [--json FILE] [--extra "MEGATRON FLAGS"]"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = "--bf16 --mock-data --hidden-dropout 0 --attention-dropout 0 --lr 1e-4 --log-interval 1"
JOBS = [
    {"name": "gpt2-1.5b", "gpus": 1, "target_mfu": 0.45, "config": None,
     "flags": "--num-layers 48 --hidden-size 1600 --num-attention-heads 25 --seq-length 1024 "
              "--max-position-embeddings 1024 --vocab-size 50257 --micro-batch-size 4 --global-batch-size 32"},
    {"name": "llama3-8b", "gpus": 8, "target_mfu": 0.40, "config": "llama3-8b",
     "flags": "--micro-batch-size 1 --global-batch-size 32 --tensor-model-parallel-size 2 --sequence-parallel "
              "--use-distributed-optimizer --overlap-grad-reduce"},
]
# nvidia-smi name fragment -> cluster file (clusters/NAME.json) describing that GPU.
CLUSTERS = [("H100", "dgx-h100"), ("H800", "hgx-h800"), ("A100", "dgx-a100"), ("V100", "dgx-v100")]


def detect_gpus():
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in p.stdout.splitlines() if line.strip()] if p.returncode == 0 else []


def cluster_for(gpu_name):
    for fragment, cluster in CLUSTERS:
        if fragment in gpu_name:
            with open(os.path.join(ROOT, "clusters", cluster + ".json")) as f:
                return cluster, json.load(f)["gpu"]["peak_tflops"]["bf16"]
    return None, None


def job_args(job, cluster, iters, extra):
    args = ([job["config"]] if job["config"] else []) + ["--cluster", cluster, "--gpus", str(job["gpus"])]
    return args + ["--"] + shlex.split(f"{job['flags']} {COMMON} --train-iters {iters} {extra}")


def run_json(cmd, out):
    """Runs cmd (which writes JSON to out); returns (json or None, last stderr/stdout line)."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    if p.returncode != 0 or not os.path.exists(out):
        return None, (lines[-1] if lines else f"exit {p.returncode}")
    with open(out) as f:
        return json.load(f), ""


def benchmark(a, job, cluster, peak_tflops, tmp):
    base = job_args(job, cluster, a.iters, a.extra)
    row = {"job": job["name"], "gpus": job["gpus"], "target_mfu": job["target_mfu"]}
    info, err = run_json([a.tandem, "info", "--json", f"{tmp}/info.json"] + base, f"{tmp}/info.json")
    if info is None:
        row["error"] = "tandem info: " + err
        return row
    sim, err = run_json([a.tandem, "simulate", "--json", f"{tmp}/sim.json"] + base, f"{tmp}/sim.json")
    if sim is not None:
        row.update(sim_tokens_per_s=sim["tokens_per_s"], sim_tflops_per_gpu=sim["model_tflops_per_gpu"],
                   sim_mfu=sim["mfu"])
    else:
        row["sim_error"] = err
    ranks = ["--ranks", str(job["gpus"])] if job["gpus"] > 1 else []
    train, err = run_json([a.tandem, "train", "--backend", "cuda", "--json", f"{tmp}/train.json"] + ranks + base,
                          f"{tmp}/train.json")
    if train is None:
        row["error"] = "tandem train: " + err
        return row
    tokens_per_s = train["tokens_per_s"]
    iteration_s = info["tokens_per_iteration"] / tokens_per_s
    tflops = info["model_flops_per_iteration"] / iteration_s / job["gpus"] / 1e12
    row.update(tokens_per_s=tokens_per_s, tflops_per_gpu=tflops, mfu=tflops / peak_tflops)
    return row


def fmt(row, key, scale=1.0, digits=1, pct=False):
    if key not in row:
        return "-"
    v = row[key] * (100.0 if pct else scale)
    return f"{v:,.{digits}f}" + ("%" if pct else "")


def print_table(rows, gpu, cluster):
    print(f"GPU: {gpu} (cluster model {cluster})")
    head = ["job", "GPUs", "tokens/s", "TFLOP/s/GPU", "MFU", "target", "sim tokens/s", "sim TFLOP/s/GPU", "sim MFU",
            "verdict"]
    table = [head]
    for r in rows:
        verdict = "-" if "mfu" not in r else ("meets" if r["mfu"] >= r["target_mfu"] else "below")
        table.append([r["job"], str(r["gpus"]), fmt(r, "tokens_per_s", digits=0), fmt(r, "tflops_per_gpu"),
                      fmt(r, "mfu", pct=True), f">= {r['target_mfu'] * 100:.0f}%", fmt(r, "sim_tokens_per_s", digits=0),
                      fmt(r, "sim_tflops_per_gpu"), fmt(r, "sim_mfu", pct=True), verdict])
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for t in table:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(t, widths))))
    for r in rows:
        for key in ("error", "sim_error"):
            if key in r:
                print(f"{r['job']}: {r[key]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", default=os.path.join(ROOT, "build", "tandem"))
    ap.add_argument("--iters", type=int, default=10, help="training iterations per job (>= 2)")
    ap.add_argument("--only", choices=[j["name"] for j in JOBS])
    ap.add_argument("--json", help="write the rows as JSON")
    ap.add_argument("--extra", default="", help="more Megatron flags for every job")
    a = ap.parse_args()
    if a.iters < 2:
        sys.exit("gpu_benchmark: --iters must be at least 2 (tokens/s is taken after the first iteration)")
    gpus = detect_gpus()
    if not gpus:
        print("gpu_benchmark: no NVIDIA GPU found (nvidia-smi lists none): this benchmark needs 1 GPU for "
              "GPT-2 1.5B and 8 for LLaMA-3 8B", file=sys.stderr)
        return 2
    cluster, peak = cluster_for(gpus[0])
    if cluster is None:
        print(f"gpu_benchmark: no cluster file describes '{gpus[0]}' (known: "
              f"{', '.join(f for f, _ in CLUSTERS)}); add one to clusters/", file=sys.stderr)
        return 2
    jobs = [j for j in JOBS if a.only in (None, j["name"])]
    rows = []
    for job in jobs:
        if job["gpus"] > len(gpus):
            rows.append({"job": job["name"], "gpus": job["gpus"], "target_mfu": job["target_mfu"],
                         "error": f"needs {job['gpus']} GPUs, {len(gpus)} visible"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(benchmark(a, job, cluster, peak, tmp))
    print_table(rows, gpus[0], cluster)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"gpu": gpus[0], "cluster": cluster, "peak_bf16_tflops": peak, "rows": rows}, f, indent=2)
    return 0 if all("mfu" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
