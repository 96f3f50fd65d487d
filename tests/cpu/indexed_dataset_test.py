#!/usr/bin/env python3
"""Megatron indexed datasets (.bin/.idx, MMIDIDX version 1) in `tandem train --backend cpu`:
a small dataset written here trains, and single-rank and DP2 training agree on it; weighted and
size-weighted blends train; a --split without a validation share skips evaluation; bad data
(truncated .bin, wrong magic, an index pointing past the end, a token id >= vocabulary size)
stops with a message naming the file and the offset; a bad --seed or --data-path blend is named.

usage: indexed_dataset_test.py --tandem BIN   (mpirun from $TANDEM_MPIRUN)"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

from mmidx import write_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_equality import MODELS  # noqa: E402

TRAINING = ("--micro-batch-size 1 --global-batch-size 8 --train-iters 6 --lr 1e-3 --seed 7 --init-method-std 0.02 "
            "--hidden-dropout 0 --attention-dropout 0 --split 90,10,0 --log-interval 3")


def run(tandem, ranks, prefix, json_out=None, extra=""):
    cmd = [tandem, "train", "--backend", "cpu"] + (["--ranks", str(ranks)] if ranks > 1 else [])
    cmd += (["--json", json_out] if json_out else []) + ["--"]
    cmd += (MODELS["llama"] + " " + TRAINING + " --data-path " + prefix + " " + extra).split()
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)


def check(cond, what, out=""):
    if not cond:
        print(out)
        sys.exit("FAILED: " + what)
    print("ok:", what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    t = ap.parse_args().tandem
    rng = random.Random(3)
    docs = []
    for _ in range(40):
        start, stride = rng.randrange(128), rng.randrange(1, 5)
        docs.append([(start + i * stride) % 128 for i in range(rng.randrange(20, 70))])
    with tempfile.TemporaryDirectory() as tmp:
        good = os.path.join(tmp, "good")
        write_dataset(good, docs)
        one, two = os.path.join(tmp, "one.json"), os.path.join(tmp, "two.json")
        p = run(t, 1, good, one)
        check(p.returncode == 0, "trains on an indexed dataset", p.stdout)
        p = run(t, 2, good, two)
        check(p.returncode == 0, "trains on it with DP2", p.stdout)
        a, b = json.load(open(one))["losses"], json.load(open(two))["losses"]
        worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
        check(worst <= 1e-5, f"single rank and DP2 see the same samples (losses within {worst:.1e})")

        other = os.path.join(tmp, "other")
        write_dataset(other, [[(x * 7 + 3) % 128 for x in d] for d in docs[:30]])
        p = run(t, 1, "0.3 " + good + " 0.7 " + other)
        check(p.returncode == 0, "trains on a weighted blend (--data-path 0.3 A 0.7 B)", p.stdout)
        p = run(t, 1, good + " " + other)
        check(p.returncode == 0, "trains on a size-weighted blend (--data-path A B)", p.stdout)
        p = run(t, 1, good, extra="--split 100,0,0 --eval-interval 3 --eval-iters 2")
        check(p.returncode == 0 and "validation split no share" in p.stdout and "validation loss" not in p.stdout,
              "--split without a validation share: no evaluation, as Megatron", p.stdout)
        p = run(t, 1, good, extra="--eval-interval 3 --eval-iters 2")
        check(p.returncode == 0 and "validation loss" in p.stdout, "evaluates on the validation split", p.stdout)
        p = run(t, 1, good, extra="--seed 4294967296")
        check(p.returncode != 0 and "--seed = 4294967296" in p.stdout, "seed outside numpy's range refused", p.stdout)
        p = run(t, 1, "0.5 " + good + " 0.5 " + os.path.join(tmp, "missing"))
        check(p.returncode != 0 and "missing.bin" in p.stdout, "missing blend member named", p.stdout)
        p = run(t, 1, "0.5 " + good + " " + other + " 0.5")
        check(p.returncode != 0 and "--data-path" in p.stdout and "mixes weights and paths" in p.stdout,
              "malformed blend refused", p.stdout)

        bad = os.path.join(tmp, "trunc")
        write_dataset(bad, docs)
        size = os.path.getsize(bad + ".bin")
        with open(bad + ".bin", "r+b") as f:
            f.truncate(size - 10)
        p = run(t, 1, bad)
        check(p.returncode != 0 and "trunc.bin" in p.stdout and "bytes [" in p.stdout, "truncated .bin refused", p.stdout)

        bad = os.path.join(tmp, "magic")
        write_dataset(bad, docs)
        with open(bad + ".idx", "r+b") as f:
            f.write(b"XXIDIDX")
        p = run(t, 1, bad)
        check(p.returncode != 0 and "magic.idx offset 0" in p.stdout and "magic" in p.stdout, "wrong magic refused", p.stdout)

        bad = os.path.join(tmp, "past")
        write_dataset(bad, docs)
        with open(bad + ".idx", "r+b") as f:   # pointer of sequence 3 far beyond the .bin
            f.seek(9 + 8 + 1 + 8 + 8 + 4 * len(docs) + 8 * 3)
            f.write(struct.pack("<q", 10 ** 9))
        p = run(t, 1, bad)
        check(p.returncode != 0 and "past.idx" in p.stdout and "sequence 3" in p.stdout, "index past the end refused", p.stdout)

        bad = os.path.join(tmp, "vocab")
        write_dataset(bad, [[d[0] + 1000] + d[1:] for d in docs])
        p = run(t, 1, bad)
        check(p.returncode != 0 and "vocab.bin offset" in p.stdout and "outside the vocabulary" in p.stdout,
              "token id >= vocabulary size refused", p.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
