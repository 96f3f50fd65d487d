#!/usr/bin/env python3
"""Bad Hugging Face directories and checkpoints are refused by `tandem import` / `tandem export`:
exit code 2, one line on stderr that names the file and the offset or tensor, and nothing written
(no --save directory, no --out or --out.tmp directory).

A valid tiny LLaMA directory is written here by an independent safetensors writer (struct + json);
each case breaks one thing in a copy of it. The valid directory itself must import and export.

usage: hf_bad_inputs.py --tandem BIN"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "num_hidden_layers": 1,
          "max_position_embeddings": 16, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 32,
          "tie_word_embeddings": False, "hidden_act": "silu"}


def llama_shapes(c):
    h, f, v, d = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    a, g = c["num_attention_heads"], c["num_key_value_heads"]
    s = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h], "lm_head.weight": [v, h]}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s.update({p + "self_attn.q_proj.weight": [a * d, h], p + "self_attn.k_proj.weight": [g * d, h],
                  p + "self_attn.v_proj.weight": [g * d, h], p + "self_attn.o_proj.weight": [h, a * d],
                  p + "mlp.gate_proj.weight": [f, h], p + "mlp.up_proj.weight": [f, h],
                  p + "mlp.down_proj.weight": [h, f], p + "input_layernorm.weight": [h],
                  p + "post_attention_layernorm.weight": [h]})
    return s


def numel(shape):
    n = 1
    for x in shape:
        n *= x
    return n


def gpt2_hub_shapes(h=16, v=32, p=16, layers=1):
    """The original GPT-2 checkpoints (saved from GPT2Model): no "transformer." prefix, causal-mask buffers."""
    s = {"wte.weight": [v, h], "wpe.weight": [p, h], "ln_f.weight": [h], "ln_f.bias": [h]}
    for i in range(layers):
        q = f"h.{i}."
        s.update({q + "ln_1.weight": [h], q + "ln_1.bias": [h], q + "attn.c_attn.weight": [h, 3 * h],
                  q + "attn.c_attn.bias": [3 * h], q + "attn.c_proj.weight": [h, h], q + "attn.c_proj.bias": [h],
                  q + "ln_2.weight": [h], q + "ln_2.bias": [h], q + "mlp.c_fc.weight": [h, 4 * h],
                  q + "mlp.c_fc.bias": [4 * h], q + "mlp.c_proj.weight": [4 * h, h], q + "mlp.c_proj.bias": [h],
                  q + "attn.bias": [1, 1, p, p]})
    return s


def safetensors(tensors, edit=None, dtype="F32"):
    """Bytes of a safetensors file of `tensors` {name: shape} (F32 or F16, values from a fixed seed);
    edit(header) may lie in the header."""
    rng = random.Random(7)
    header, data = {}, b""
    code, size = {"F32": ("f", 4), "F16": ("e", 2)}[dtype]
    for name in sorted(tensors):
        n = numel(tensors[name])
        header[name] = {"dtype": dtype, "shape": tensors[name], "data_offsets": [len(data), len(data) + size * n]}
        data += struct.pack(f"<{n}{code}", *[rng.gauss(0, 0.02) for _ in range(n)])
    if edit:
        edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write_dir(path, config=CONFIG, tensors=None, edit=None, cut=None):
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    raw = safetensors(tensors if tensors is not None else llama_shapes(CONFIG), edit)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(raw[:cut] if cut is not None else raw)
    return raw


failures = []


def expect_refusal(tandem, what, args, must_contain, not_created):
    proc = subprocess.run([tandem] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    err = proc.stderr.strip()
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit {proc.returncode}, expected 2")
    if len(err.splitlines()) != 1:
        problems.append(f"{len(err.splitlines())} lines on stderr, expected 1")
    problems += [f"message lacks '{s}'" for s in must_contain if s not in err]
    problems += [f"{p} was created" for p in not_created if os.path.exists(p)]
    print(("ok:  " if not problems else "FAIL: ") + what + " -> " + err)
    if problems:
        failures.append(what + ": " + "; ".join(problems))


def check_gpt2_hub_import(t, tmp):
    """A GPT-2 directory as the original checkpoints are (no "transformer." prefix, attn.bias buffers,
    F16 weights) imports; its fp32 export holds the same values under GPT2LMHeadModel's names."""
    d = os.path.join(tmp, "gpt2-hub")
    os.makedirs(d)
    config = {"model_type": "gpt2", "n_embd": 16, "n_head": 2, "n_layer": 1, "n_positions": 16, "n_ctx": 16,
              "vocab_size": 32, "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    raw = safetensors(gpt2_hub_shapes(), dtype="F16")
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(raw)
    ck, out = os.path.join(tmp, "ck-gpt2-hub"), os.path.join(tmp, "hf-gpt2-hub")
    for cmd in (["import", "--hf", d, "--save", ck], ["export", "--load", ck, "--format", "hf", "--out", out]):
        proc = subprocess.run([t] + cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"FAILED: {' '.join(cmd[:1])} of the original-GPT-2-style directory: {proc.stderr}")

    def tensors(path):
        with open(path, "rb") as f:
            b = f.read()
        (n,) = struct.unpack("<Q", b[:8])
        h = json.loads(b[8:8 + n])
        out = {}
        for name, v in h.items():
            if name != "__metadata__":
                lo, hi = v["data_offsets"]
                code, size = {"F32": ("f", 4), "F16": ("e", 2)}[v["dtype"]]
                out[name] = struct.unpack(f"<{(hi - lo) // size}{code}", b[8 + n + lo:8 + n + hi])
        return out

    src, dst = tensors(os.path.join(d, "model.safetensors")), tensors(os.path.join(out, "model.safetensors"))
    want = {"transformer." + k: v for k, v in src.items() if not k.endswith(".attn.bias")}
    if want != dst:
        sys.exit(f"FAILED: GPT-2 import: exported names/values differ: {sorted(set(want) ^ set(dst))[:4]}")
    print(f"ok:  original GPT-2 names, attn.bias buffers and F16 weights import; the fp32 export holds the same "
          f"{len(dst)} tensors under transformer.*")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    t = ap.parse_args().tandem
    with tempfile.TemporaryDirectory() as tmp:
        good = os.path.join(tmp, "good")
        raw = write_dir(good)
        ok = subprocess.run([t, "import", "--hf", good, "--save", os.path.join(tmp, "ck-good")], capture_output=True, text=True)
        if ok.returncode != 0:
            sys.exit("FAILED: the valid directory does not import: " + ok.stderr)
        print("ok:  the valid directory imports")
        check_gpt2_hub_import(t, tmp)
        (hlen,) = struct.unpack("<Q", raw[:8])
        data_start = 8 + hlen
        last = sorted(llama_shapes(CONFIG))[-1]
        first = sorted(llama_shapes(CONFIG))[0]

        cases = []

        def beyond(h):
            h[last]["data_offsets"][1] += 64
            h[last]["data_offsets"][0] += 64

        cases.append(("data_offsets beyond the file", {"edit": beyond}, [last, "past the end of the file", "file offset"]))

        def overlap(h):
            second = sorted(h)[1]
            h[second]["data_offsets"] = [x - 8 for x in h[second]["data_offsets"]]

        cases.append(("overlapping data_offsets", {"edit": overlap}, ["overlap at file offset " + str(data_start + 4 * 32 * 16 - 8)]))
        cases.append(("unknown dtype", {"edit": lambda h: h[first].update(dtype="F8_E9M9")}, [first, "F8_E9M9"]))
        cases.append(("shape x dtype != span", {"edit": lambda h: h[first].update(shape=[32, 15])},
                      [first, "[32, 15]", "span 2048", "file offset " + str(data_start)]))
        cases.append(("truncated in the data", {"cut": len(raw) - 100}, ["model.safetensors: tensor", "past the end of the file"]))
        cases.append(("truncated in the header", {"cut": 20}, ["header length " + str(hlen), "offset 0"]))
        cases.append(("truncated to 4 bytes", {"cut": 4}, ["truncated: 4 bytes"]))
        missing = dict(llama_shapes(CONFIG))
        del missing["model.layers.0.mlp.up_proj.weight"]
        cases.append(("missing tensor", {"tensors": missing}, ["model.layers.0.mlp.up_proj.weight", "is missing"]))
        small = dict(CONFIG, hidden_size=8, intermediate_size=16, head_dim=4)
        cases.append(("config.json says hidden 16, tensors are hidden 8", {"tensors": llama_shapes(small)},
                      ["model.safetensors: tensor model.embed_tokens.weight has shape [32, 8]", "config.json (hidden_size 16",
                       "needs [32, 16]"]))
        extra = dict(llama_shapes(CONFIG), **{"model.layers.0.self_attn.q_norm.weight": [8]})
        cases.append(("tensor not in the model", {"tensors": extra}, ["model.layers.0.self_attn.q_norm.weight", "not part of"]))
        cases.append(("unsupported model_type", {"config": dict(CONFIG, model_type="mixtral")}, ["config.json", "model_type", "mixtral"]))
        cases.append(("config.json field of the wrong type", {"config": dict(CONFIG, hidden_size="16")},
                      ["config.json", "hidden_size", "\"16\""]))
        cases.append(("rope_scaling", {"config": dict(CONFIG, rope_scaling={"type": "linear", "factor": 2.0})},
                      ["config.json", "rope_scaling"]))
        for i, (what, spec, needles) in enumerate(cases):
            d = os.path.join(tmp, f"case{i}")
            write_dir(d, config=spec.get("config", CONFIG), tensors=spec.get("tensors"), edit=spec.get("edit"),
                      cut=spec.get("cut"))
            save = os.path.join(tmp, f"ck{i}")
            expect_refusal(t, "import: " + what, ["import", "--hf", d, "--save", save], needles, [save])

        # A sharded directory whose index names a file that is not there.
        d = os.path.join(tmp, "index-missing-file")
        write_dir(d)
        os.rename(os.path.join(d, "model.safetensors"), os.path.join(d, "model-00001-of-00002.safetensors"))
        index = {"metadata": {"total_size": 1}, "weight_map": {n: "model-00001-of-00002.safetensors" for n in llama_shapes(CONFIG)}}
        index["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors"
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f)
        expect_refusal(t, "import: index names a missing shard", ["import", "--hf", d, "--save", os.path.join(tmp, "ck-i")],
                       ["model-00002-of-00002.safetensors", "missing"], [os.path.join(tmp, "ck-i")])

        # A checkpoint whose job says hidden 8 while its tensors are hidden 16.
        ck = os.path.join(tmp, "ck-lying-job")
        shutil.copytree(os.path.join(tmp, "ck-good"), ck)
        meta_path = os.path.join(ck, "iter_0000001", "metadata.json")
        meta = json.load(open(meta_path))
        meta["job"]["model"]["hidden_size"] = 8
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        out = os.path.join(tmp, "hf-out")
        expect_refusal(t, "export: checkpoint tensor does not match its job", ["export", "--load", ck, "--format", "hf", "--out", out],
                       ["iter_0000001", "embedding.word", "[32, 16]", "needs [32, 8]"], [out, out + ".tmp"])
        expect_refusal(t, "export: --dtype fp8", ["export", "--load", os.path.join(tmp, "ck-good"), "--format", "hf", "--out", out,
                                                  "--dtype", "fp8"], ["--dtype", "fp8"], [out, out + ".tmp"])
        expect_refusal(t, "export: --max-shard-size 5XB", ["export", "--load", os.path.join(tmp, "ck-good"), "--format", "hf",
                                                           "--out", out, "--max-shard-size", "5XB"], ["--max-shard-size", "5XB"],
                       [out, out + ".tmp"])
        os.makedirs(os.path.join(tmp, "taken", "x"))
        expect_refusal(t, "export: --out exists", ["export", "--load", os.path.join(tmp, "ck-good"), "--format", "hf", "--out",
                                                   os.path.join(tmp, "taken")], ["--out", "exists"], [os.path.join(tmp, "taken.tmp")])
    if failures:
        sys.exit("FAILED:\n  " + "\n  ".join(failures))
    print(f"all {len(cases) + 5} bad inputs refused")


if __name__ == "__main__":
    main()
