#!/usr/bin/env python3
"""PyTorch as the independent reference for a whole training step of tandem's CPU backend.

Runs `tandem train --backend cpu --dump-first-step` for a tiny GPT- or LLaMA-style model (one
rank), rebuilds the same model in PyTorch (float64) from tandem's initial weights — Megatron's
layout: fused QKV in query groups [q heads | k | v], RoPE rotate-half, SwiGLU [gate | up] or
GeLU, pre-norm residual blocks, vocabulary padded, output layer tied to the word embedding or
not — runs the same microbatches, and compares the loss of step 1 and the gradient of every
parameter (loss averaged over all tokens of the global batch).

Error per tensor: max |tandem - torch| / max |torch|; tolerance 1e-5.
Exit 77 (skipped) without torch.

Multi-latent attention (--model mla, mla-noqlora) is rebuilt from DeepSeek-V2's equations as
Megatron-Core's MLASelfAttention lays out its weights (per head [q_nope | q_pe] and [k_nope | v]).

usage: torch_model_reference.py --tandem BIN --model gpt|llama|mla|mla-noqlora [--keep FILE]"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_equality import MODELS, TRAINING  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("PyTorch is not installed: skipped")
    sys.exit(77)

TOL = 1e-5
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def splitmix64(state):
    """backends/executor/init_rng.h: returns (value, state); works on Python ints or uint64 arrays."""
    state = (state + GOLDEN) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def fnv1a64(text):
    h = 1469598103934665603
    for c in text.encode():
        h = ((h ^ c) * 1099511628211) & M64
    return h


def dropout_mask(cfg, step, layer, site, row_ids, cols):
    """tandem's hidden-dropout keep mask / (1 - p) for rows with global ids row_ids (ModelRunner::dropout)."""
    p = cfg["hidden_dropout"]
    key = splitmix64(fnv1a64("dropout") ^ ((cfg["seed"] * GOLDEN) & M64))
    key = splitmix64(key ^ ((step << 32) & M64) ^ ((layer + 2) << 8) ^ site)
    out = torch.empty(len(row_ids), cols, dtype=torch.float64)
    for r, rid in enumerate(row_ids):
        row_seed = splitmix64(key ^ ((rid * 0xD1B54A32D192ED03) & M64))
        for c in range(cols):
            u = (splitmix64((row_seed + c * GOLDEN) & M64) >> 11) * (1.0 / 9007199254740992.0)
            out[r, c] = 1.0 / (1.0 - p) if u >= p else 0.0
    return out


def norm(cfg, x, w, b):
    eps = cfg["norm_epsilon"]
    if cfg["normalization"] == "LayerNorm":
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(cfg, x, positions):
    # x [s, heads, d]; rotate-half over the whole head dim.
    d = x.shape[-1]
    half = d // 2
    inv = cfg["rotary_base"] ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def attention_mask(cfg, layer, sample, heads, s):
    """tandem's attention-dropout keep mask / (1 - p) [heads, s_q, s_kv] (attention_dropout_scale)."""
    p = cfg["attention_dropout"]
    key = splitmix64(fnv1a64("attention-dropout") ^ ((cfg["seed"] * GOLDEN) & M64))
    key = splitmix64(key ^ ((1 << 32) & M64) ^ (layer + 2))
    out = torch.empty(heads, s, s, dtype=torch.float64)
    for h in range(heads):
        base = key ^ ((sample * 0xD1B54A32D192ED03) & M64) ^ ((h * 0xA24BAED4963EE407) & M64)
        for i in range(s):
            for j in range(s):
                u = (splitmix64(base ^ ((i << 32) & M64) ^ j) >> 11) * (1.0 / 9007199254740992.0)
                out[h, i, j] = 1.0 / (1.0 - p) if u >= p else 0.0
    return out


def drop(cfg, x, layer, site, rows):
    if cfg["hidden_dropout"] <= 0:
        return x
    return x * dropout_mask(cfg, 1, layer, site, rows, x.shape[-1])


def causal_attention(q, k, v, scale, keep=None):
    """q, k [s, heads, d_qk], v [s, heads, d_v] -> [s, heads * d_v], causal softmax(q k^T * scale) v;
    keep [heads, s, s]: the dropout mask of the probabilities (already divided by 1 - p)."""
    s = q.shape[0]
    scores = torch.einsum("shd,thd->hst", q, k) * scale
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    if keep is not None:
        probs = probs * keep
    return torch.einsum("hst,thd->shd", probs, v).reshape(s, -1)


def mla_attention(cfg, P, i, h, positions, sample):
    """Multi-head latent attention (DeepSeek-V2 section 2.1, Megatron-Core MLASelfAttention, rope_type
    "rope"): queries from a normalised q_lora_rank latent (or straight from h), keys/values from a
    normalised kv_lora_rank latent; per head the key is [k_nope | the one decoupled RoPE key shared by
    all heads], the query [q_nope | RoPE(q_pe)]; scores scaled by 1/sqrt(qk_head_dim + rope dim)."""
    a, s, pre = cfg["num_attention_heads"], h.shape[0], f"layers.{i}."
    dn, dr, dv, kl = cfg["qk_head_dim"], cfg["qk_pos_emb_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    if cfg["q_lora_rank"] > 0:
        cq = norm(cfg, h @ P[pre + "q_down.weight"], P[pre + "q_norm.weight"], P.get(pre + "q_norm.bias"))
        q = cq @ P[pre + "q_up.weight"]
    else:
        q = h @ P[pre + "q.weight"]
    q = q.view(s, a, dn + dr)
    ckv = h @ P[pre + "kv_down.weight"]
    latent, k_pe = ckv[:, :kl], ckv[:, kl:]
    kv = norm(cfg, latent, P[pre + "kv_norm.weight"], P.get(pre + "kv_norm.bias")) @ P[pre + "kv_up.weight"]
    kv = kv.view(s, a, dn + dv)
    q_nope, q_pe = q[..., :dn], q[..., dn:]
    k_nope, v = kv[..., :dn], kv[..., dn:]
    k_pe = k_pe.view(s, 1, dr)
    if cfg["rope"]:
        q_pe, k_pe = rope(cfg, q_pe, positions), rope(cfg, k_pe, positions)
    query = torch.cat([q_nope, q_pe], dim=-1)
    key = torch.cat([k_nope, k_pe.expand(s, a, dr)], dim=-1)
    keep = attention_mask(cfg, i, sample, a, s) if cfg["attention_dropout"] > 0 else None
    return causal_attention(query, key, v, 1.0 / math.sqrt(dn + dr), keep)


def layer(cfg, P, i, x, positions, rows, sample):
    g, a, d = cfg["num_query_groups"], cfg["num_attention_heads"], cfg["head_dim"]
    qpg, s = a // g, x.shape[0]
    pre = f"layers.{i}."
    h = norm(cfg, x, P[pre + "input_norm.weight"], P.get(pre + "input_norm.bias"))
    if cfg.get("multi_latent_attention"):
        return attention_residual_and_mlp(cfg, P, i, x, mla_attention(cfg, P, i, h, positions, sample), rows)
    qkv = h @ P[pre + "qkv.weight"]
    if pre + "qkv.bias" in P:
        qkv = qkv + P[pre + "qkv.bias"]
    qkv = qkv.view(s, g, qpg + 2, d)
    q = qkv[:, :, :qpg, :].reshape(s, a, d)
    k, v = qkv[:, :, qpg, :], qkv[:, :, qpg + 1, :]
    if cfg["rope"]:
        q, k = rope(cfg, q, positions), rope(cfg, k, positions)
    k = k.repeat_interleave(qpg, dim=1)
    v = v.repeat_interleave(qpg, dim=1)
    scores = torch.einsum("shd,thd->hst", q, k) / math.sqrt(d)
    mask = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    if cfg["attention_dropout"] > 0:
        probs = probs * attention_mask(cfg, i, sample, a, s)
    ctx = torch.einsum("hst,thd->shd", probs, v).reshape(s, a * d)
    return attention_residual_and_mlp(cfg, P, i, x, ctx, rows)


def mlp(cfg, h, w1, w2, b1=None, b2=None):
    f1 = h @ w1
    if b1 is not None:
        f1 = f1 + b1
    if cfg["swiglu"]:
        gate, up = f1.chunk(2, dim=-1)
        act = F.silu(gate) * up
    else:
        act = F.gelu(f1, approximate="tanh" if cfg["gelu_tanh"] else "none")
    out = act @ w2
    return out + b2 if b2 is not None else out


# Tokens routed to each expert per MoE layer over the step (aux-loss-free balancing's loads).
LOADS = {}


def moe(cfg, P, i, h):
    """DeepSeek-V3's MoE block as Megatron-Core's TopKRouter + experts + shared expert: sigmoid
    scores, group-limited top-k (groups ranked by the sum of their top k/group_topk scores), weights
    normalised over the chosen experts (times the scaling factor), SwiGLU experts, plus the shared
    expert. The expert bias is 0 in the first step (it only steers the choice)."""
    pre = f"layers.{i}."
    E, k = cfg["num_experts"], cfg["moe_router_topk"]
    groups, gk = cfg["moe_router_num_groups"], cfg["moe_router_group_topk"]
    if cfg["moe_router_score_function"] != "sigmoid" or cfg["moe_aux_loss_coeff"] > 0:
        sys.exit("the reference rebuilds the sigmoid router without the aux loss only")
    s = h.shape[0]
    scores = torch.sigmoid(h @ P[pre + "router.weight"])
    choose = scores.detach().clone()
    if groups > 0 and gk > 0:
        group_scores = choose.view(s, groups, -1).topk(k // gk, dim=-1)[0].sum(dim=-1)
        keep = torch.zeros(s, groups, dtype=torch.bool).scatter(1, torch.topk(group_scores, gk, dim=-1)[1], True)
        choose = choose.masked_fill(~keep.repeat_interleave(E // groups, dim=1), float("-inf"))
    idx = torch.topk(choose, k, dim=1)[1]
    sel = scores.gather(1, idx)
    probs = sel / (sel.sum(-1, keepdim=True) + 1e-20) if k > 1 else sel
    if cfg["moe_router_topk_scaling_factor"] > 0:
        probs = probs * cfg["moe_router_topk_scaling_factor"]
    LOADS[i] = LOADS.get(i, torch.zeros(E)) + torch.bincount(idx.reshape(-1), minlength=E).double()
    out = torch.zeros_like(h)
    w1, w2 = P[pre + "experts.fc1.weight"], P[pre + "experts.fc2.weight"]
    for e in range(E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if len(tok) > 0:
            out = out.index_add(0, tok, probs[tok, slot][:, None] * mlp(cfg, h[tok], w1[e], w2[e]))
    if pre + "shared_fc1.weight" in P:
        out = out + mlp(cfg, h, P[pre + "shared_fc1.weight"], P[pre + "shared_fc2.weight"])
    return out


def attention_residual_and_mlp(cfg, P, i, x, ctx, rows):
    """The rest of a pre-norm decoder layer after the attention core: ctx [s, heads * d_v]."""
    pre = f"layers.{i}."
    proj = ctx @ P[pre + "proj.weight"]
    if pre + "proj.bias" in P:
        proj = proj + P[pre + "proj.bias"]
    x = x + drop(cfg, proj, i, 1, rows)
    h = norm(cfg, x, P[pre + "pre_mlp_norm.weight"], P.get(pre + "pre_mlp_norm.bias"))
    if i in cfg.get("moe_layers", []):
        out = moe(cfg, P, i, h)
    else:
        out = mlp(cfg, h, P[pre + "fc1.weight"], P[pre + "fc2.weight"], P.get(pre + "fc1.bias"), P.get(pre + "fc2.bias"))
    return x + drop(cfg, out, i, 2, rows)


def model_loss(cfg, P, tokens, labels, sample):
    s = cfg["seq_length"]
    positions = torch.arange(s)
    rows = [sample * s + p for p in range(s)]
    x = P["embedding.word"][tokens]
    if cfg["learned_positions"]:
        x = x + P["embedding.position"][positions]
    x = drop(cfg, x, -1, 3, rows)
    for i in range(cfg["num_layers"]):
        x = layer(cfg, P, i, x, positions, rows, sample)
    w = P["embedding.word"] if cfg["tied_embeddings"] else P["output.weight"]
    lm = F.cross_entropy(norm(cfg, x, P["final_norm.weight"], P.get("final_norm.bias")) @ w.t(), labels,
                         reduction="sum")
    return lm, mtp_loss(cfg, P, x, tokens, labels, positions, rows, sample, w)


def roll_left(t):
    """Megatron-Core's roll_tensor(t, shifts=-1): one position to the left, the last one 0."""
    return torch.cat([t[1:], torch.zeros_like(t[:1])])


def mtp_loss(cfg, P, h, tokens, labels, positions, rows, sample, w):
    """DeepSeek-V3's multi-token prediction (§2.2) as Megatron-Core's MultiTokenPredictionBlock:
    depth k sees the tokens and labels shifted k places (the last k positions masked), combines
    enorm(embedding) and hnorm(previous depth's hidden state) through eh_proj, runs one decoder layer
    (global index num_layers + k - 1, built like the last decoder layer), its own final norm and the
    shared output layer. Returns sum over depths of the masked mean loss x scaling / depths."""
    total = 0.0
    depths = cfg.get("mtp_num_layers", 0)
    mask = torch.ones(len(tokens), dtype=torch.float64)
    for k in range(depths):
        i = cfg["num_layers"] + k
        pre = f"layers.{i}.mtp."
        tokens, labels, mask = roll_left(tokens), roll_left(labels), roll_left(mask)
        e = norm(cfg, P["embedding.word"][tokens], P[pre + "enorm.weight"], P.get(pre + "enorm.bias"))
        hn = norm(cfg, h, P[pre + "hnorm.weight"], P.get(pre + "hnorm.bias"))
        x = torch.cat([e, hn], dim=-1) @ P[pre + "eh_proj.weight"]
        was = cfg.get("moe_layers", [])
        cfg["moe_layers"] = list(was) + ([i] if cfg["num_layers"] - 1 in was else [])
        h = layer(cfg, P, i, x, positions, rows, sample)
        cfg["moe_layers"] = was
        logits = norm(cfg, h, P[pre + "final_norm.weight"], P.get(pre + "final_norm.bias")) @ w.t()
        ce = F.cross_entropy(logits, labels, reduction="none")
        total = total + (ce * mask).sum() / mask.sum() * cfg["mtp_loss_scaling_factor"] / depths
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--model", choices=["gpt", "llama", "mla", "mla-noqlora", "deepseek", "deepseek-mtp",
                                        "deepseek-mtp2", "mla-mtp"],
                    required=True)
    ap.add_argument("--keep")
    ap.add_argument("--hidden-dropout", default="0")
    ap.add_argument("--attention-dropout", default="0")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dump_path = args.keep or os.path.join(tmp, "step1.json")
        cmd = [args.tandem, "train", "--backend", "cpu", "--dump-first-step", dump_path, "--"]
        cmd += (MODELS[args.model] + " " + TRAINING + " --train-iters 1 --lr-warmup-iters 0").split()
        cmd += ["--hidden-dropout", args.hidden_dropout, "--attention-dropout", args.attention_dropout]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        if proc.returncode != 0:
            print(proc.stdout)
            return 1
        with open(dump_path) as f:
            dump = json.load(f)
    cfg = dump["config"]
    if cfg["micro_batch_size"] != 1:
        sys.exit("the reference assumes --micro-batch-size 1")
    P = {n: torch.tensor(t["value"], dtype=torch.float64).view(t["shape"]).requires_grad_(True)
         for n, t in dump["weights"].items()}
    total, count, objective = 0.0, 0, 0.0
    for toks, labs, samples in zip(dump["tokens"], dump["labels"], dump["samples"]):
        lm, mtp = model_loss(cfg, P, torch.tensor(toks), torch.tensor(labs), samples[0])
        total = total + lm
        objective = objective + lm / len(toks) + mtp
        count += len(toks)
    loss = total / count   # the reported LM loss; the gradients are the objective's (+ MTP)
    (objective / len(dump["tokens"])).backward()
    failures, worst = [], 0.0
    rel = abs(loss.item() - dump["loss"]) / abs(loss.item())
    worst = max(worst, rel)
    if rel > TOL:
        failures.append(f"loss: tandem {dump['loss']:.9g}, torch {loss.item():.9g}, rel {rel:.2e}")
    for name, t in dump["grads"].items():
        ref = P[name].grad
        got = torch.tensor(t["value"], dtype=torch.float64).view(t["shape"])
        scale = ref.abs().max().item()
        err = (got - ref).abs().max().item() / (scale if scale > 0 else 1.0)
        worst = max(worst, err)
        if err > TOL:
            failures.append(f"grad {name}: max error {err:.2e} of max |grad| {scale:.3e}")
    if cfg.get("moe_router_enable_expert_bias"):
        rate = cfg["moe_router_bias_update_rate"]
        for layer, load in sorted(LOADS.items()):
            want = rate * torch.sign(load.mean() - load)
            got = torch.tensor(dump["expert_bias"][str(layer)], dtype=torch.float64)
            err = (got - want).abs().max().item() / rate
            worst = max(worst, err)
            if err > TOL:
                failures.append(f"expert bias of layer {layer} after step 1: tandem {got.tolist()}, torch {want.tolist()}")
    print(f"{args.model} (dropout hidden {cfg['hidden_dropout']}, attention {cfg['attention_dropout']}): loss {loss.item():.6f}, {len(dump['grads'])} parameter gradients, "
          f"worst relative error {worst:.2e}")
    if failures:
        print("\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
