#!/usr/bin/env python3
"""`tandem generate` end to end on a checkpoint of `tandem train --backend cpu` (no PyTorch needed):

1. KV-cached decoding equals decoding that recomputes the whole sequence every step
   (--no-kv-cache): the same tokens, greedy and sampled, the same log-probabilities and last-step
   logits to 1e-5;
2. sampling is deterministic: the same --seed gives the same tokens, another seed other tokens;
3. --prompt TEXT --tokenizer-type NullTokenizer reads the same ids as --prompt-ids and prints them
   back as text; --iteration picks an earlier checkpoint;
4. bad inputs (missing checkpoint, prompt beyond the model's positions, --top-p outside (0, 1],
   unknown --tokenizer-type, an MoE checkpoint, ...) stop with exit code 2 and one line on stderr
   naming the field and value, and leave no --json file behind.

usage: generate_cli_test.py --tandem BIN"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_equality import MODELS  # noqa: E402

TRAINING = ("--micro-batch-size 1 --global-batch-size 8 --lr 3e-3 --min-lr 1e-4 --lr-decay-style cosine "
            "--lr-warmup-iters 2 --seed 1234 --init-method-std 0.02 --mock-data --hidden-dropout 0 "
            "--attention-dropout 0 --log-interval 10 --eval-interval 40 --eval-iters 1")
PROMPT = "3,5,7,9,11"
failures = []


def run(cmd, ok=True):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if ok and proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        sys.exit(f"exit {proc.returncode}: {' '.join(cmd)}")
    return proc


def check(cond, what):
    print(("ok: " if cond else "FAILED: ") + what)
    if not cond:
        failures.append(what)


def generate(tandem, ck, out, *extra, prompt=("--prompt-ids", PROMPT)):
    proc = run([tandem, "generate", "--load", ck, *prompt, "--max-new-tokens", "20", "--json", out, *extra])
    with open(out) as f:
        return json.load(f), proc.stdout


def close(a, b):
    scale = max(abs(x) for x in b)
    return max(abs(x - y) for x, y in zip(a, b)) / scale


def cache_equality(tandem, ck, tmp):
    for label, extra in [("greedy", []), ("sampled", ["--temperature", "1.0", "--top-k", "20", "--top-p", "0.9",
                                                      "--seed", "3"])]:
        a, _ = generate(tandem, ck, os.path.join(tmp, "a.json"), *extra)
        b, _ = generate(tandem, ck, os.path.join(tmp, "b.json"), *extra, "--no-kv-cache")
        check(a["kv_cache"] and not b["kv_cache"], f"{label}: the JSON says which decoding ran")
        check(a["generated_ids"] == b["generated_ids"] and len(a["generated_ids"]) == 20,
              f"{label}: KV cache and full recomputation give the same 20 tokens {a['generated_ids']}")
        err = max(close(a["last_logits"], b["last_logits"]),
                  max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"])))
        check(err <= 1e-5, f"{label}: last-step logits and log-probabilities agree to {err:.1e}")


def determinism(tandem, ck, tmp):
    sample = ["--temperature", "1.0", "--seed"]
    a, _ = generate(tandem, ck, os.path.join(tmp, "s1.json"), *sample, "9")
    b, _ = generate(tandem, ck, os.path.join(tmp, "s2.json"), *sample, "9")
    c, _ = generate(tandem, ck, os.path.join(tmp, "s3.json"), *sample, "10")
    check(a["generated_ids"] == b["generated_ids"], "the same seed gives the same sampled tokens")
    check(a["generated_ids"] != c["generated_ids"], "another seed gives other sampled tokens")
    g, _ = generate(tandem, ck, os.path.join(tmp, "g.json"))
    k1, _ = generate(tandem, ck, os.path.join(tmp, "k1.json"), "--temperature", "1.0", "--top-k", "1", "--seed", "4")
    check(k1["generated_ids"] == g["generated_ids"], "--top-k 1 sampling equals greedy decoding")


def tokenizer_and_iteration(tandem, ck, tmp):
    ids, _ = generate(tandem, ck, os.path.join(tmp, "ids.json"))
    text, out = generate(tandem, ck, os.path.join(tmp, "text.json"), "--tokenizer-type", "NullTokenizer",
                         prompt=("--prompt", "3 5  7\t9 11"))
    eod = 127   # the last id of the 128-id vocabulary
    want = ids["generated_ids"]
    if eod in want:
        want = want[:want.index(eod) + 1]
    check(text["prompt_ids"] == [3, 5, 7, 9, 11] and text["generated_ids"] == want,
          "NullTokenizer: the text prompt reads as the same ids and generates the same tokens (up to EOD)")
    line = "text: " + " ".join(map(str, text["generated_ids"]))
    check(line in out.splitlines() and text["text"] == line[6:], "NullTokenizer: the tokens printed back as text")
    early, _ = generate(tandem, ck, os.path.join(tmp, "early.json"), "--iteration", "20")
    check(early["iteration"] == 20 and ids["iteration"] == 40, "--iteration 20 loads the earlier checkpoint")


def bad_inputs(tandem, ck, moe_ck, tmp):
    out = os.path.join(tmp, "never.json")
    base = ["--load", ck, "--max-new-tokens", "4", "--json", out]
    long_prompt = ",".join(["1"] * 33)
    cases = [
        (["--load", os.path.join(tmp, "missing"), "--prompt-ids", "1", "--max-new-tokens", "4"], ["--load", "missing"]),
        (base + ["--prompt-ids", long_prompt], ["prompt: 33 tokens", "32 positions"]),
        (base + ["--prompt-ids", ",".join(["1"] * 30)], ["--max-new-tokens = 4", "32 positions"]),
        (base + ["--prompt-ids", "1", "--top-p", "0"], ["--top-p = 0", "(0, 1]"]),
        (base + ["--prompt-ids", "1", "--top-p", "1.5"], ["--top-p = 1.5", "(0, 1]"]),
        (base + ["--prompt", "1 2", "--tokenizer-type", "GPT3Tokenizer"], ["--tokenizer-type = GPT3Tokenizer", "NullTokenizer"]),
        (base + ["--prompt", "1 2"], ["--prompt", "--tokenizer-type"]),
        (base + ["--prompt", "1 two", "--tokenizer-type", "NullTokenizer"], ["--prompt", "'two' at character 2"]),
        (base + ["--prompt-ids", "1,300"], ["token id 300 at offset 1", "[0, 128)"]),
        (base + ["--prompt-ids", "1,x"], ["--prompt-ids (offset 2)", "x"]),
        (base + ["--prompt-ids", "1", "--temperature", "-1"], ["--temperature = -1"]),
        (base + ["--prompt-ids", "1", "--iteration", "7"], ["iter_0000007"]),
        (base + ["--prompt-ids", "1", "--frobnicate"], ["--frobnicate"]),
        (base + ["--prompt-ids", "1", "--hf", ck], ["--load / --hf", "exactly one"]),
        (["--hf", os.path.join(tmp, "no-hf"), "--prompt-ids", "1", "--max-new-tokens", "4", "--json", out],
         ["--hf", "no-hf", "config.json"]),
        (base + ["--prompt", "hi", "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", os.path.join(tmp, "nope.json"),
                 "--merge-file", os.path.join(tmp, "nope.txt")], ["--vocab-file", "nope.json"]),
        (base + ["--prompt-ids", "1", "--vocab-file", "v.json"], ["--vocab-file", "--tokenizer-type"]),
        (base + ["--prompt-ids", "1", "--tokenizer-type", "NullTokenizer", "--vocab-size", "500"],
         ["tokenizer has 501 ids", "vocab_size 128"]),
        (["--load", moe_ck, "--prompt-ids", "1", "--max-new-tokens", "4", "--json", out], ["num_experts = 4", "MoE"]),
    ]
    for args, wants in cases:
        proc = run([tandem, "generate", *args], ok=False)
        err = proc.stderr.strip()
        good = proc.returncode == 2 and len(err.splitlines()) == 1 and all(w in err for w in wants)
        good = good and not os.path.exists(out)
        check(good, f"exit 2, one line naming {wants}: `generate {' '.join(args[2:] if args[0] == '--load' else args)}` "
                    f"-> exit {proc.returncode}: {err}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    args = ap.parse_args()
    t = args.tandem
    with tempfile.TemporaryDirectory() as tmp:
        ck, moe_ck = os.path.join(tmp, "ck"), os.path.join(tmp, "moe")
        run([t, "train", "--backend", "cpu", "--"] + (MODELS["llama"] + " " + TRAINING).split() +
            ["--train-iters", "40", "--save", ck, "--save-interval", "20"])
        run([t, "train", "--backend", "cpu", "--"] + (MODELS["moe"] + " " + TRAINING).split() +
            ["--train-iters", "3", "--save", moe_ck, "--save-interval", "3"])
        cache_equality(t, ck, tmp)
        determinism(t, ck, tmp)
        tokenizer_and_iteration(t, ck, tmp)
        bad_inputs(t, ck, moe_ck, tmp)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
