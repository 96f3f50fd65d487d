#!/usr/bin/env python3
"""A deterministic, varied JSONL corpus for the preprocessing tests and benchmark: English prose
with contractions, numbers, whitespace runs (spaces, tabs, newlines, trailing), accented Latin,
Greek, Cyrillic, Arabic, CJK, emoji (with ZWJ sequences and flags), combining marks, punctuation
runs, code, URLs, empty documents and documents given as lists of sentences. Some lines are
written with \\u escapes (ensure_ascii), some with raw UTF-8.

Characters on which JavaScript's and Python's `\\s` differ (U+0085, U+FEFF) are left out unless
asked for (--python-whitespace), so a JavaScript encoder can be the reference.

usage: corpus.py OUT.jsonl [--docs N | --megabytes M] [--seed S] [--python-whitespace]"""
import argparse
import json
import random

WORDS = ("the of and to in is was that for it with as his on be at by had are but from or have an they "
         "which one you were all her she there would their we him been has when who will no more if out so "
         "said what up its about than into them can only other time new some could these two may first then "
         "do any like my now over such our man me even most made after also did many before must through "
         "Megatron tokenizer pipeline parallelism gradient accumulation throughput microbatch").split()
CONTRACTIONS = ["it's", "don't", "we're", "they've", "I'm", "you'll", "he'd", "IT'S", "Don'T", "o'clock", "'tis"]
SCRIPTS = ["café", "naïve", "Ærøskøbing", "straße", "ﬁnance", "Ελληνικά κείμενα", "Привет, мир", "مرحبا بالعالم",
           "日本語のテキスト", "中文分词测试", "한국어 문장", "ภาษาไทย", "हिन्दी पाठ", "e\u0301te\u0301", "Zoë", "Ωμέγα"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🚀🚀", "❤️", "🤖", "✨"]
NUMBERS = ["2024", "3.14159", "1,000,000", "42nd", "v1.2.3", "0x1F", "١٢٣", "½", "Ⅻ", "²", "100%", "-7"]
PUNCT = ["!!!", "...", "?!", "---", "((", "))", "\"quoted\"", "'single'", "«guillemets»", "…", "#", "@user", "$5"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\t\t ", "\r\n", "\u00a0", "\u3000", "\u2009", " \u2028 "]
CODE = ["def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) {}", "https://example.com/a?b=c&d=e",
        "a_b-c.d/e", "<html><body>hi</body></html>", "SELECT * FROM t;", "x=1;y=2", "C:\\path\\file.txt"]


def sentence(rng, python_ws):
    parts = []
    for _ in range(rng.randrange(3, 25)):
        r = rng.random()
        if r < 0.55:
            w = rng.choice(WORDS)
            parts.append(w.capitalize() if rng.random() < 0.1 else w)
        elif r < 0.62:
            parts.append(rng.choice(CONTRACTIONS))
        elif r < 0.70:
            parts.append(rng.choice(SCRIPTS))
        elif r < 0.75:
            parts.append(rng.choice(EMOJI))
        elif r < 0.82:
            parts.append(rng.choice(NUMBERS))
        elif r < 0.88:
            parts.append(rng.choice(PUNCT))
        elif r < 0.91:
            parts.append(rng.choice(CODE))
        elif r < 0.93 and python_ws:
            parts.append(rng.choice(["\u0085", "a\u0085b", "\ufeff"]))
        else:
            parts.append(rng.choice(WORDS) + rng.choice(SPACES) + rng.choice(WORDS))
    text = ""
    for p in parts:
        text += p + (rng.choice(SPACES) if rng.random() < 0.15 else " ")
    if rng.random() < 0.3:
        text = text.rstrip(" ")
    return text


def document(rng, python_ws):
    r = rng.random()
    title = sentence(rng, python_ws)[:40] if rng.random() < 0.9 else ""
    if r < 0.04:
        return {"text": "", "title": title}
    if r < 0.14:   # a list of sentences, some empty
        return {"title": title,
                "text": [sentence(rng, python_ws) if rng.random() < 0.8 else "" for _ in range(rng.randrange(1, 5))]}
    text = " ".join(sentence(rng, python_ws) for _ in range(rng.randrange(1, 6)))
    if rng.random() < 0.05:
        text += " <|endoftext|> " + sentence(rng, python_ws)
    return {"id": rng.randrange(10**6), "text": text, "title": title}


def write_corpus(path, docs=None, megabytes=None, seed=0, python_ws=False):
    rng = random.Random(seed)
    written, n = 0, 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        while (docs is not None and n < docs) or (megabytes is not None and written < megabytes * 1048576):
            line = json.dumps(document(rng, python_ws), ensure_ascii=rng.random() < 0.3) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            n += 1
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--docs", type=int)
    ap.add_argument("--megabytes", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--python-whitespace", action="store_true")
    a = ap.parse_args()
    if a.docs is None and a.megabytes is None:
        a.docs = 1000
    print(write_corpus(a.out, a.docs, a.megabytes, a.seed, a.python_whitespace))
