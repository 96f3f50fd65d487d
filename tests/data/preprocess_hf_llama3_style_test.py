#!/usr/bin/env python3
"""`tandem preprocess --tokenizer-type HuggingFaceTokenizer` on a hand-made tokenizer.json in Llama
3's shape: a Split pre-tokenizer with Llama 3's regex then ByteLevel without regex, BPE with
ignore_merges, added special tokens, a TemplateProcessing post-processor that puts
<|begin_of_text|> first, EOD from tokenizer_config.json's eos_token; a second file adds an NFC
normalizer. Its merges are learned here from the corpus by a few hundred rounds of BPE training.

The reference is Hugging Face's encoding algorithm written here in Python with the `regex`
module (python3-regex) for the split and unicodedata for NFC, and megatron_reference.py for the
files; tandem's must be byte-identical. Exit 77 (skipped) without the `regex` module.
usage: preprocess_hf_llama3_style_test.py --tandem BIN --work DIR"""
import collections
import json
import os
import subprocess
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_support import check, require_regex, work_args  # noqa: E402
from corpus import write_corpus  # noqa: E402
from megatron_reference import bytes_to_unicode, encode_document, sentences_of, write_indexed_dataset  # noqa: E402

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
ADDED = {"<|begin_of_text|>": 1000, "<|end_of_text|>": 1001, "<|eot_id|>": 1002}


B2U = bytes_to_unicode()


def split_isolated(pattern, text):
    """Hugging Face's Split with behaviour Isolated: matches and the gaps between them."""
    out, last = [], 0
    for m in pattern.finditer(text):
        if m.start() > last:
            out.append(text[last:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        last = m.end()
    if last < len(text):
        out.append(text[last:])
    return out


def to_byte_level(piece):
    return "".join(B2U[b] for b in piece.encode("utf-8"))


def learn_merges(words, rounds):
    """Plain BPE training: repeatedly merge the most frequent adjacent pair (ties: smallest pair)."""
    counts = collections.Counter(tuple(w) for w in words)
    merges = []
    for _ in range(rounds):
        pairs = collections.Counter()
        for w, c in counts.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = collections.Counter()
        for w, c in counts.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        counts = merged
    return merges


class Reference:
    """Hugging Face's tokenizer(text).input_ids for this tokenizer.json shape."""

    def __init__(self, regex_module, vocab, merges, nfc):
        self.split = regex_module.compile(LLAMA3_SPLIT)
        self.vocab, self.nfc = vocab, nfc
        self.ranks = {m: i for i, m in enumerate(merges)}

    def bpe(self, word):
        if word in self.vocab:   # ignore_merges
            return [self.vocab[word]]
        syms = list(word)
        while len(syms) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 60), a, b) for a, b in zip(syms, syms[1:])]
            rank, a, b = min(pairs)
            if rank == 1 << 60:
                break
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        return [self.vocab[s] for s in syms if s in self.vocab]

    def segment(self, text):
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        ids = []
        for piece in split_isolated(self.split, text):
            ids.extend(self.bpe(to_byte_level(piece)))
        return ids

    def encode(self, text):
        ids, start, i = [ADDED["<|begin_of_text|>"]], 0, 0
        names = sorted(ADDED, key=len, reverse=True)
        while i < len(text):
            hit = next((t for t in names if text.startswith(t, i)), None)
            if hit is None:
                i += 1
                continue
            ids += self.segment(text[start:i]) + [ADDED[hit]]
            i += len(hit)
            start = i
        return ids + self.segment(text[start:])


def tokenizer_json(vocab, merges, nfc):
    specials = {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [1000], "tokens": ["<|begin_of_text|>"]}}
    return {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t, i in ADDED.items()],
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [], "special_tokens": specials}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


def make_fixture(work, regex_module):
    """The corpus (with added tokens in some texts) and a vocabulary and merges learned from it.
    Returns (corpus path, rows, vocab, merges)."""
    os.makedirs(work, exist_ok=True)
    corpus = os.path.join(work, "corpus.jsonl")
    write_corpus(corpus, docs=800, seed=11, python_ws=True)
    rows = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    for i, r in enumerate(rows):
        if i % 11 == 3 and isinstance(r["text"], str):
            r["text"] = "<|eot_id|>" + r["text"][:50] + "<|end_of_text|><|begin_of_text|>" + r["text"][50:]
    with open(corpus, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    pattern = regex_module.compile(LLAMA3_SPLIT)
    words = [to_byte_level(p) for r in rows[:400] for s in sentences_of(r, "text") for p in split_isolated(pattern, s)]
    merges = learn_merges(words, 300)
    # Vocabulary: the 256 bytes in a shuffled order, the merge results, and three whole words that
    # no merge builds (only ignore_merges reaches them).
    order = sorted(range(256), key=lambda b: (b * 97) % 256)
    vocab = {B2U[b]: i for i, b in enumerate(order)}
    for x, y in merges:
        vocab.setdefault(x + y, len(vocab))
    for w in (" Megatron", " tokenizer", "Ġpipeline"):
        vocab.setdefault(to_byte_level(w) if not w.startswith("Ġ") else w, len(vocab))
    return corpus, rows, vocab, merges


def write_tokenizer_dir(d, vocab, merges, nfc):
    """tokenizer.json and tokenizer_config.json (eos_token <|end_of_text|>) in directory d."""
    os.makedirs(d, exist_ok=True)
    json.dump(tokenizer_json(vocab, merges, nfc), open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"))
    json.dump({"eos_token": {"content": "<|end_of_text|>"}}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    return d


def main():
    a = work_args()
    regex = require_regex()
    corpus, rows, vocab, merges = make_fixture(a.work, regex)
    check(len(vocab) < 1000, "vocabulary below the added tokens' ids (%d entries, %d merges)" % (len(vocab), len(merges)))
    for nfc in (False, True):
        d = write_tokenizer_dir(os.path.join(a.work, "nfc" if nfc else "plain"), vocab, merges, nfc)
        ref = Reference(regex, vocab, merges, nfc)
        docs = [encode_document([ref.encode(s) for s in sentences_of(r, "text")], True, ADDED["<|end_of_text|>"])
                for r in rows]
        want = os.path.join(d, "want_text_document")
        write_indexed_dataset(want, docs, len(vocab) + len(ADDED))
        got = os.path.join(d, "got")
        p = subprocess.run([a.tandem, "preprocess", "--input", corpus, "--output-prefix", got, "--tokenizer-type",
                            "HuggingFaceTokenizer", "--tokenizer-model", d, "--append-eod", "--workers", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        check(p.returncode == 0, "tandem preprocess ran (NFC %s)" % nfc, p.stdout)
        for ext in (".bin", ".idx"):
            same = open(got + "_text_document" + ext, "rb").read() == open(want + ext, "rb").read()
            check(same, "Llama-3-style tokenizer.json%s: %s byte-identical (%d documents, %d tokens)"
                  % (" with NFC" if nfc else "", ext, len(rows), sum(len(x[0]) for x in docs)))


if __name__ == "__main__":
    main()
