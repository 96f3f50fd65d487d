#!/usr/bin/env python3
"""The op trace of `tandem train` equals the op trace of `tandem simulate` rank by rank: the real
backend executes exactly the instructions the simulator costs (kind, site, provenance, shapes,
group, peer, tag, bytes), every rank played (`simulate --all-ranks`). The training side is what
the CPU executor recorded as it issued each instruction to the device and communicator, not a
second printing of the lowering.

usage: op_trace_equal.py --tandem BIN --model NAME --layout NAME   (models/layouts of train_equality.py)"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_equality import LAYOUTS, MODEL_OVERRIDES, MODELS, TRAINING  # noqa: E402


def run(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"exit {proc.returncode}: {' '.join(cmd)}")


def per_rank(path):
    ranks, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# rank "):
                cur = int(line.split()[2])
                ranks[cur] = []
            else:
                ranks[cur].append(line)
    return ranks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--model", default="llama", choices=sorted(MODELS))
    ap.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    args = ap.parse_args()
    ranks, layout = LAYOUTS[args.layout]
    flags = " ".join([TRAINING, MODELS[args.model], MODEL_OVERRIDES.get(args.layout, ""), layout]).split()
    with tempfile.TemporaryDirectory() as tmp:
        train_trace, sim_trace = os.path.join(tmp, "train.ops"), os.path.join(tmp, "simulate.ops")
        run([args.tandem, "train", "--backend", "cpu", "--ranks", str(ranks), "--trace-ops", train_trace, "--"] + flags)
        run([args.tandem, "simulate", "--all-ranks", "--gpus", str(ranks), "--trace-ops", sim_trace, "--"] + flags)
        train, sim = per_rank(train_trace), per_rank(sim_trace)
    if sorted(train) != sorted(sim) or len(train) != ranks:
        sys.exit(f"ranks differ: train {sorted(train)}, simulate {sorted(sim)}")
    for r in sorted(train):
        a, b = train[r], sim[r]
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                sys.exit(f"rank {r}, instruction {i}:\n  train    {x}\n  simulate {y}")
        if len(a) != len(b):
            sys.exit(f"rank {r}: train executed {len(a)} instructions, simulate played {len(b)}")
    total = sum(len(v) for v in train.values())
    print(f"{args.model} {args.layout}: op traces equal on all {ranks} ranks ({total} instructions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
