#!/usr/bin/env python3
"""Checkpoints of `tandem train --backend cpu`:

1. a run is killed (SIGKILL, fault injection) while it saves iteration 6: the previous
   checkpoint (iteration 3) is intact and is what --load resumes from;
2. resuming with the same layout gives bit-identical losses and grad norms to an uninterrupted run;
3. resuming with another layout (resharding: TP2 saved, PP2 + distributed optimizer loaded)
   matches to 1e-5;
4. a corrupted or truncated checkpoint file is refused with a message naming it;
5. a tiny DeepSeek-V3 with aux-loss-free balancing keeps its expert bias: resuming with the same
   layout (EP2) is bit-identical, with another (PP2 DualPipe) within 1e-5.

usage: checkpoint_test.py --tandem BIN   (mpirun from $TANDEM_MPIRUN)"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_equality import MODELS, TRAINING  # noqa: E402

FLAGS = (MODELS["llama"] + " " + TRAINING).split()


def train(tandem, ranks, extra, json_out=None, env=None, expect_ok=True, flags=FLAGS):
    cmd = [tandem, "train", "--backend", "cpu", "--ranks", str(ranks)]
    if json_out:
        cmd += ["--json", json_out]
    cmd += ["--"] + flags + extra.split()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    if expect_ok and proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"exit {proc.returncode}: {' '.join(cmd)}")
    return proc


def load(path):
    with open(path) as f:
        return json.load(f)


def check(cond, what):
    if not cond:
        sys.exit("FAILED: " + what)
    print("ok:", what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    args = ap.parse_args()
    t = args.tandem
    with tempfile.TemporaryDirectory() as tmp:
        ref_json, ck = os.path.join(tmp, "ref.json"), os.path.join(tmp, "ck")
        train(t, 2, "--tensor-model-parallel-size 2", ref_json)
        ref = load(ref_json)
        killed = train(t, 2, f"--tensor-model-parallel-size 2 --save {ck} --save-interval 3",
                       env={"TANDEM_FAULT_KILL_IN_SAVE": "6"}, expect_ok=False)
        check(killed.returncode != 0, "the run killed during the save of iteration 6 exited non-zero")
        with open(os.path.join(ck, "latest_checkpointed_iteration.txt")) as f:
            check(f.read().strip() == "3", "the tracker still names iteration 3")
        check(not os.path.exists(os.path.join(ck, "iter_0000006")), "no iter_0000006 directory (only its .tmp)")

        same_json = os.path.join(tmp, "same.json")
        train(t, 2, f"--tensor-model-parallel-size 2 --load {ck}", same_json)
        same = load(same_json)
        k = same["first_iteration"] - 1
        check(k == 3, "resumed after iteration 3")
        check(same["losses"] == ref["losses"][k:] and same["grad_norms"] == ref["grad_norms"][k:],
              "same-layout resume: losses and grad norms bit-identical to the uninterrupted run")

        other_json = os.path.join(tmp, "other.json")
        train(t, 2, f"--pipeline-model-parallel-size 2 --use-distributed-optimizer --load {ck}", other_json)
        other = load(other_json)
        worst = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"][k:], other["losses"]))
        check(other["first_iteration"] == 4 and worst <= 1e-5,
              f"resharded resume (TP2 -> PP2 + distributed optimizer): losses within {worst:.1e}")

        bad = os.path.join(tmp, "bad")
        shutil.copytree(ck, bad)
        victim = os.path.join(bad, "iter_0000003", "rank_00001.bin")
        with open(victim, "r+b") as f:
            f.seek(200)
            byte = f.read(1)
            f.seek(200)
            f.write(bytes([byte[0] ^ 0xFF]))
        proc = train(t, 2, f"--tensor-model-parallel-size 2 --load {bad}", expect_ok=False)
        check(proc.returncode != 0 and "checksum" in proc.stdout and "rank_00001.bin" in proc.stdout,
              "a flipped byte is refused, naming the file")
        with open(victim, "r+b") as f:
            f.truncate(100)
        proc = train(t, 2, f"--tensor-model-parallel-size 2 --load {bad}", expect_ok=False)
        check(proc.returncode != 0 and "truncated" in proc.stdout, "a truncated file is refused")
        expert_bias(t, tmp)
    return 0


def expert_bias(t, tmp):
    flags = (MODELS["deepseek-mtp"] + " " + TRAINING).split()
    ref_json, ck = os.path.join(tmp, "ds_ref.json"), os.path.join(tmp, "ds_ck")
    train(t, 2, "--expert-model-parallel-size 2", ref_json, flags=flags)
    # Killed while saving iteration 10 (the same LR schedule as the reference): iteration 5 is the latest.
    train(t, 2, f"--expert-model-parallel-size 2 --save {ck} --save-interval 5", flags=flags,
          env={"TANDEM_FAULT_KILL_IN_SAVE": "10"}, expect_ok=False)
    with open(os.path.join(ck, "iter_0000005", "metadata.json")) as f:
        saved = json.load(f).get("expert_bias", {})
    check(sorted(saved) == ["1", "2", "3", "4"] and any(v != 0 for b in saved.values() for v in b),
          "the checkpoint keeps the expert bias of every MoE layer (the MTP module's too)")
    ref = load(ref_json)
    same_json, other_json = os.path.join(tmp, "ds_same.json"), os.path.join(tmp, "ds_other.json")
    train(t, 2, f"--expert-model-parallel-size 2 --load {ck}", same_json, flags=flags)
    same = load(same_json)
    check(same["first_iteration"] == 6 and same["losses"] == ref["losses"][5:],
          "DeepSeek-V3 same-layout resume (EP2): losses bit-identical, the expert bias restored")
    train(t, 2, f"--pipeline-model-parallel-size 2 --pipeline-schedule dualpipe --load {ck}", other_json, flags=flags)
    other = load(other_json)
    worst = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"][5:], other["losses"]))
    check(worst <= 1e-5, f"DeepSeek-V3 resharded resume (EP2 -> PP2 DualPipe): losses within {worst:.1e}")


if __name__ == "__main__":
    sys.exit(main())
