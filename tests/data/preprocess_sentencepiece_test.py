#!/usr/bin/env python3
"""`tandem preprocess --tokenizer-type SentencePieceTokenizer` against Python: a small BPE model is
trained here with spm_train; the reference encodes with python3-sentencepiece and applies
Megatron's _SentencePieceTokenizer rules, written here from its published source (the model's
pieces, then <CLS> <SEP> <EOD> <MASK> and the pad/bos/eos pieces appended when missing; those
special tokens found in the text, earliest first, each as its one id; EOD = <EOD>), then
megatron_reference.py writes the files. tandem's must be byte-identical (1 and 2 workers).

Exit 77 (skipped) without spm_train, python3-sentencepiece, or a tandem built with SentencePiece.
usage: preprocess_sentencepiece_test.py --tandem BIN --work DIR"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from corpus import write_corpus  # noqa: E402
from test_support import check, work_args  # noqa: E402
from megatron_reference import encode_document, sentences_of, write_indexed_dataset  # noqa: E402


class MegatronSentencePiece:
    """Megatron's _SentencePieceTokenizer (vocab_extra_ids = 0), on python3-sentencepiece."""

    def __init__(self, model):
        import sentencepiece
        self.sp = sentencepiece.SentencePieceProcessor(model_file=model)
        self.vocab = {self.sp.id_to_piece(i): i for i in range(len(self.sp))}
        self.special = {}

        def add(t):
            if t not in self.vocab:
                self.vocab[t] = len(self.vocab)
            self.special[t] = self.vocab[t]

        for t in ("<CLS>", "<SEP>", "<EOD>", "<MASK>"):
            add(t)
        for idf, fallback in ((self.sp.pad_id, "<PAD>"), (self.sp.bos_id, "<BOS>"), (self.sp.eos_id, "<EOS>")):
            i = idf()
            add(self.sp.id_to_piece(i) if 0 <= i < len(self.sp) else fallback)
        self.eod = self.vocab["<EOD>"]

    def tokenize(self, text):
        ids, idx = [], 0
        while True:
            found = {t: text.find(t, idx) for t in self.special if text.find(t, idx) >= 0}
            if not found:
                break
            nxt = min(found, key=found.get)
            ids.extend(self.sp.encode_as_ids(text[idx:found[nxt]]))
            ids.append(self.special[nxt])
            idx = found[nxt] + len(nxt)
        ids.extend(self.sp.encode_as_ids(text[idx:]))
        return ids


def main():
    a = work_args()
    if shutil.which("spm_train") is None:
        print("SKIPPED: spm_train not found (Debian: sentencepiece)")
        sys.exit(77)
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        print("SKIPPED: python3-sentencepiece not installed")
        sys.exit(77)
    os.makedirs(a.work, exist_ok=True)
    corpus = os.path.join(a.work, "corpus.jsonl")
    write_corpus(corpus, docs=600, seed=5, python_ws=True)
    rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    for i, r in enumerate(rows):   # special tokens inside some texts
        if i % 9 == 4 and isinstance(r["text"], str):
            r["text"] = r["text"][:30] + " <EOD>x<s>" + r["text"][30:] + "<MASK></s><SEP>"
    with open(corpus, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    train = os.path.join(a.work, "train.txt")
    with open(train, "w", encoding="utf-8") as f:
        for r in rows:
            for s in sentences_of(r, "text"):
                f.write(s.replace("\n", " ") + "\n")
    prefix = os.path.join(a.work, "sp")
    p = subprocess.run(["spm_train", "--input=" + train, "--model_prefix=" + prefix, "--vocab_size=600",
                        "--model_type=bpe", "--character_coverage=1.0", "--num_threads=2"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    check(p.returncode == 0, "spm_train trained a 600-piece BPE model", p.stdout[-2000:])
    ref = MegatronSentencePiece(prefix + ".model")
    docs = [encode_document([ref.tokenize(s) for s in sentences_of(r, "text")], True, ref.eod) for r in rows]
    want = os.path.join(a.work, "want_text_document")
    write_indexed_dataset(want, docs, len(ref.vocab))
    for workers in ("1", "2"):
        got = os.path.join(a.work, "got-w" + workers)
        p = subprocess.run([a.tandem, "preprocess", "--input", corpus, "--output-prefix", got, "--tokenizer-type",
                            "SentencePieceTokenizer", "--tokenizer-model", prefix + ".model", "--append-eod",
                            "--workers", workers], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=300)
        if "without SentencePiece" in p.stdout:
            print("SKIPPED: this tandem was built without SentencePiece:", p.stdout.strip())
            sys.exit(77)
        check(p.returncode == 0, "tandem preprocess (SentencePiece, %s workers) ran" % workers, p.stdout)
        for ext in (".bin", ".idx"):
            same = open(got + "_text_document" + ext, "rb").read() == open(want + ext, "rb").read()
            check(same, "SentencePiece %s with %s workers byte-identical (%d documents, vocabulary %d, EOD %d)"
                  % (ext, workers, len(rows), len(ref.vocab), ref.eod))


if __name__ == "__main__":
    main()
