#!/usr/bin/env python3
"""GPT-2 BPE in pure Python, the algorithm of Megatron's gpt2_tokenization.py (GPT2Tokenizer: the
`regex` module's split, byte-to-unicode, merges by rank with a per-word cache, unknown pieces as
id 0, no special tokens in the text), written here from the published algorithm. It is the
reference of preprocess_gpt2_python_test.py and, run as a script, the throughput reference of
experiments/preprocess/preprocess_bench.sh (Megatron's tools/preprocess_data.py runs this
tokenizer in each worker process, plus json.loads per line).

usage: megatron_gpt2_reference.py ENCODER.json VOCAB.bpe CORPUS.jsonl MEGABYTES
prints: documents, tokens, seconds, documents/s, MB/s, tokens/s (one process, one core)"""
import json
import sys
import time

import regex

from megatron_reference import bytes_to_unicode

PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class Gpt2:
    def __init__(self, encoder_path, merges_path):
        self.encoder = json.load(open(encoder_path, encoding="utf-8"))
        merges = open(merges_path, encoding="utf-8").read().split("\n")[1:-1]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        self.cache[token] = word
        return word

    def encode(self, text):
        ids = []
        for piece in PAT.findall(text):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder.get(t, 0) for t in self.bpe(piece))
        return ids


def main():
    encoder, merges, corpus, megabytes = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    tok = Gpt2(encoder, merges)
    docs = tokens = read = 0
    start = time.perf_counter()
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            for s in text if isinstance(text, list) else [text]:
                tokens += len(tok.encode(s))
            docs += 1
            read += len(line.encode("utf-8"))
            if read >= megabytes * 1048576:
                break
    t = time.perf_counter() - start
    print("%d %d %.3f %.0f %.3f %.0f" % (docs, tokens, t, docs / t, read / t / 1048576, tokens / t))


if __name__ == "__main__":
    main()
