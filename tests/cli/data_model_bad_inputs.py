#!/usr/bin/env python3
"""Bad inputs of the data and model files (issue 15), end to end: each must stop with exit code 2,
exactly one line on stderr naming the file and the offset, line or tensor, and nothing written.

  indexed dataset (`train --data-path`)  a .idx cut inside its arrays; a .bin shorter than the index says
  JSONL (`preprocess`)                  a broken line (1 and 2 workers), a non-object line, a truncated .gz
  tokenizer files                       of the wrong kind for GPT2BPETokenizer, HuggingFaceTokenizer and
                                        SentencePieceTokenizer (preprocess and generate)
  safetensors (`generate --hf`, `import --hf`)  data_offsets past the end, an unknown dtype, a dtype
                                        whose size does not match the span, a header length past the file
  checkpoints (`train --load`)           a checkpoint of another model (hidden size, layer count; one
                                        rank, and two ranks, where each rank refuses and one prints)

Every file is made here from tandem's own outputs (a preprocessed corpus, a trained checkpoint and
its Hugging Face export), then damaged the way the case says.
usage: data_model_bad_inputs.py --tandem BIN --work DIR"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

MODEL = ("--num-layers 2 --num-attention-heads 2 --seq-length 32 --max-position-embeddings 32 --vocab-size 128 "
         "--micro-batch-size 1 --global-batch-size 2 --lr 1e-3 --seed 1").split()
failures = []


def run_ok(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    if p.returncode != 0:
        sys.exit(f"FAILED: setup step {' '.join(cmd[:3])}: {p.stdout[-2000:]}")


def refused(tandem, what, args, needles, not_written=()):
    """not_written: paths that must not exist afterwards (or, for (path, bytes) pairs, be unchanged)."""
    p = subprocess.run([tandem] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    err = p.stderr.strip()
    problems = []
    if p.returncode != 2:
        problems.append(f"exit {p.returncode}, expected 2")
    if len(err.splitlines()) != 1:
        problems.append(f"{len(err.splitlines())} lines on stderr, expected 1")
    problems += [f"message lacks '{n}'" for n in needles if n not in err]
    for w in not_written:
        if isinstance(w, tuple):
            if snapshot(w[0]) != w[1]:
                problems.append(f"{w[0]} changed")
        elif os.path.exists(w):
            problems.append(f"{w} was written")
    print(("ok:   " if not problems else "FAIL: ") + what + " -> " + err)
    if problems:
        failures.append(what + ": " + "; ".join(problems))


def snapshot(d):
    """Names and sizes of everything under d."""
    return sorted((os.path.relpath(os.path.join(r, f), d), os.path.getsize(os.path.join(r, f)))
                  for r, _, fs in os.walk(d) for f in fs)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def leftovers(prefix):
    d, base = os.path.split(prefix)
    return [os.path.join(d, f) for f in os.listdir(d) if f.startswith(base)]


def indexed_dataset_cases(t, w):
    corpus = os.path.join(w, "c.jsonl")
    with open(corpus, "w") as f:
        for i in range(60):
            f.write(json.dumps({"text": " ".join(str((i * 7 + k) % 100) for k in range(40 + i % 9))}) + "\n")
    good = os.path.join(w, "good")
    run_ok([t, "preprocess", "--input", corpus, "--output-prefix", good, "--tokenizer-type", "NullTokenizer",
            "--vocab-size", "127"])
    idx, bin_ = open(good + "_text_document.idx", "rb").read(), open(good + "_text_document.bin", "rb").read()
    train = ["train", "--backend", "cpu", "--"] + MODEL + ["--hidden-size", "32", "--train-iters", "2"]
    cut = os.path.join(w, "cut_text_document")
    write(cut + ".idx", idx[:40])   # header (34 bytes) + part of the sequence lengths
    write(cut + ".bin", bin_)
    metrics = os.path.join(w, "no-metrics.jsonl")
    refused(t, ".idx cut inside its sequence lengths", train[:3] + ["--metrics", metrics] + train[3:] +
            ["--data-path", cut], ["cut_text_document.idx", "offset 34", "truncated"], [metrics])
    short = os.path.join(w, "short_text_document")
    write(short + ".idx", idx)
    write(short + ".bin", bin_[:len(bin_) // 2])
    refused(t, ".bin shorter than the index says", train + ["--data-path", short],
            ["short_text_document.bin", "has %d bytes" % (len(bin_) // 2), "sequence"])


def jsonl_cases(t, w):
    out = os.path.join(w, "never")
    null = ["--tokenizer-type", "NullTokenizer", "--vocab-size", "10", "--output-prefix", out]
    broken = os.path.join(w, "broken.jsonl")
    write(broken, b'{"text": "1 2"}\n{"text": "3 4"}\n{"text": "5 \n{"text": "6"}\n')
    for workers in ("1", "2"):
        refused(t, f"JSONL with a broken line ({workers} workers)",
                ["preprocess", "--input", broken, "--workers", workers] + null, ["broken.jsonl:3", "invalid JSON"])
        if leftovers(out):
            failures.append(f"preprocess left {leftovers(out)}")
    not_object = os.path.join(w, "array.jsonl")
    write(not_object, b'{"text": "1"}\n[1, 2]\n')
    refused(t, "JSONL line that is not an object", ["preprocess", "--input", not_object] + null,
            ["array.jsonl:2", "not a JSON object"])
    import gzip
    gz = os.path.join(w, "cut.jsonl.gz")
    write(gz, gzip.compress(b'{"text": "1 2"}\n' * 2000)[:60])
    refused(t, "truncated .jsonl.gz", ["preprocess", "--input", gz] + null, ["cut.jsonl.gz", "truncated"])
    if leftovers(out):
        failures.append(f"preprocess left {leftovers(out)}")


def tokenizer_cases(t, w, ck):
    out = os.path.join(w, "never")
    corpus = os.path.join(w, "c.jsonl")
    merges, vocab, binary = (os.path.join(w, n) for n in ("merges.txt", "vocab.json", "binary.model"))
    write(merges, b"#version: 0.2\n\xc4\xa0 t\nh e\n")
    write(vocab, json.dumps({"a": 0, "b": 1, "<|endoftext|>": 2}).encode())
    write(binary, bytes(range(256)) * 4)
    kinds = [
        ("GPT-2 --vocab-file given a merges file", ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", merges,
                                                    "--merge-file", merges], ["--vocab-file", "merges.txt"]),
        ("GPT-2 --merge-file given a vocabulary", ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", vocab,
                                                   "--merge-file", vocab], ["--merge-file", "vocab.json"]),
        ("tokenizer.json given a binary file", ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", binary],
         ["--tokenizer-model", "binary.model", "not a Hugging Face tokenizer.json"]),
        ("tokenizer.json given GPT-2's vocab.json", ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
                                                     vocab], ["--tokenizer-model", "vocab.json"]),
        ("SentencePiece model given a JSON file", ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model",
                                                   vocab], ["--tokenizer-model", "vocab.json"]),
    ]
    for what, tok, needles in kinds:
        refused(t, "preprocess: " + what, ["preprocess", "--input", corpus, "--output-prefix", out] + tok, needles)
        never = os.path.join(w, "never.json")
        refused(t, "generate: " + what, ["generate", "--load", ck, "--prompt", "hi", "--max-new-tokens", "2",
                                         "--json", never] + tok, needles, [never])
    if leftovers(out):
        failures.append(f"preprocess left {leftovers(out)}")


def safetensors_cases(t, w, hf):
    st = os.path.join(hf, "model.safetensors")
    raw = open(st, "rb").read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8:8 + hlen]), raw[8 + hlen:]
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    first, last = names[0], names[-1]

    def lie(name, edit):
        h = json.loads(json.dumps(header))
        edit(h)
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        d = os.path.join(w, "hf-" + name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(hf, d)
        write(os.path.join(d, "model.safetensors"), struct.pack("<Q", len(text)) + text + data)
        return d

    end = len(data)
    cases = [
        ("data_offsets past the end of the file", lie("beyond", lambda h: h[last].update(data_offsets=[end - 8, end + 8])),
         [last, "past the end"]),
        ("unknown dtype", lie("dtype", lambda h: h[first].update(dtype="F8_E9M9")), [first, "F8_E9M9"]),
        ("dtype F16 over an F32 span", lie("f16", lambda h: h[first].update(dtype="F16")), [first, "F16"]),
        ("shape larger than the span", lie("shape", lambda h: h[first].update(shape=[h[first]["shape"][0] * 2] +
                                                                               h[first]["shape"][1:])), [first]),
    ]
    cut = os.path.join(w, "hf-cut")
    shutil.rmtree(cut, ignore_errors=True)
    shutil.copytree(hf, cut)
    write(os.path.join(cut, "model.safetensors"), raw[:hlen // 2])
    cases.append(("header length past the end of the file", cut, ["model.safetensors", "header length"]))
    for what, d, needles in cases:
        never_ck, never_json = os.path.join(w, "never-ck"), os.path.join(w, "never.json")
        refused(t, "generate --hf: " + what, ["generate", "--hf", d, "--prompt-ids", "1", "--max-new-tokens", "2",
                                              "--json", never_json], ["model.safetensors"] + needles, [never_json])
        refused(t, "import --hf: " + what, ["import", "--hf", d, "--save", never_ck], ["model.safetensors"] + needles,
                [never_ck])


def checkpoint_cases(t, w, ck):
    before = snapshot(ck)
    metrics = os.path.join(w, "no-metrics.jsonl")
    base = [t, "train", "--backend", "cpu", "--metrics", metrics, "--"] + MODEL + ["--mock-data", "--train-iters", "4",
                                                                                 "--load", ck, "--save", ck]
    refused(t, "--load a checkpoint of another hidden size", base[1:] + ["--hidden-size", "64"],
            ["iter_0000002", "tensor", "[1, 32]", "[1, 64]"], [(ck, before), metrics])
    refused(t, "--load a checkpoint with fewer layers", base[1:] + ["--hidden-size", "32", "--num-layers", "3"],
            ["iter_0000002", "layers.2"], [(ck, before), metrics])
    # Two ranks (TP2): every rank refuses, one line from one rank, no MPI abort banner.
    two = base[1:4] + ["--ranks", "2"] + base[4:] + ["--hidden-size", "64", "--tensor-model-parallel-size", "2"]
    refused(t, "--load a checkpoint of another model on 2 ranks", two,
            ["rank_00000.bin", "tensor", "[1, 32]", "[1, 64]"], [(ck, before), metrics])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    t, w = a.tandem, a.work
    ck, hf = os.path.join(w, "ck"), os.path.join(w, "hf")
    run_ok([t, "train", "--backend", "cpu", "--"] + MODEL + ["--hidden-size", "32", "--train-iters", "2",
                                                             "--mock-data", "--save", ck])
    run_ok([t, "export", "--load", ck, "--format", "hf", "--out", hf])
    indexed_dataset_cases(t, w)
    jsonl_cases(t, w)
    tokenizer_cases(t, w, ck)
    safetensors_cases(t, w, hf)
    checkpoint_cases(t, w, ck)
    if failures:
        print(f"{len(failures)} case(s) failed:\n  " + "\n  ".join(failures))
        return 1
    print("every bad input refused in one line, exit 2, nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
