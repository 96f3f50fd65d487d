#!/usr/bin/env python3
"""PyTorch as the independent reference for tandem's CPU kernels.

Runs the C++ driver (tests/cpu/torch_driver.cpp), which writes random inputs together with
tandem's outputs and gradients for every op, recomputes each op forward and backward with
PyTorch autograd in float64 from the same float32 inputs, and compares.

Error measure, per compared tensor: max |tandem - torch| / max |torch| (the largest error
relative to the tensor's scale). Tolerance 1e-5 for every op (fp32 kernels against a float64
reference); index outputs (expert choice, kept mask, permutation) and bf16 rounding must match
exactly.

Exit status: 0 all within tolerance, 1 a mismatch or a driver failure, 77 PyTorch or NumPy is
not installed (CTest reports the test as skipped, never as passed).

Usage: torch_reference.py --driver PATH [--seed N] [--keep DIR]
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile

SKIP = 77
DEFAULT_TOL = 1e-5
EXACT = 0.0

np = None
torch = None
F = None


def load_tensors(directory, case):
    dtypes = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8}
    out = {}
    for name, spec in case["tensors"].items():
        raw = np.fromfile(os.path.join(directory, spec["file"]), dtype=dtypes[spec["dtype"]])
        arr = raw.reshape(spec["shape"])
        if spec["dtype"] == "float32":
            out[name] = torch.from_numpy(arr.astype(np.float64))
        else:
            out[name] = torch.from_numpy(arr.astype(np.int64))
    return out


def leaf(t):
    return t.clone().requires_grad_(True)


def grad_of(loss, *inputs):
    return torch.autograd.grad(loss, inputs)


# Each op returns a list of (name, tandem tensor, torch tensor, tolerance).

def op_embedding(t, p):
    table = leaf(t["table"])
    ids, v_local = t["ids"], table.shape[0]
    inside = (ids >= p["vocab_start"]) & (ids < p["vocab_start"] + v_local)
    local = (ids - p["vocab_start"]).clamp(0, v_local - 1)
    y = F.embedding(local, table) * inside.unsqueeze(1)
    (d_table,) = grad_of((y * t["dy"]).sum(), table)
    return [("y", t["y"], y, DEFAULT_TOL), ("d_table", t["d_table"], d_table, DEFAULT_TOL)]


def op_layernorm(t, p):
    x, g, b = leaf(t["x"]), leaf(t["gamma"]), leaf(t["beta"])
    y = F.layer_norm(x, (x.shape[-1],), g, b, p["eps"])
    dx, dg, db = grad_of((y * t["dy"]).sum(), x, g, b)
    return [("y", t["y"], y, DEFAULT_TOL), ("dx", t["dx"], dx, DEFAULT_TOL),
            ("dgamma", t["dgamma"], dg, DEFAULT_TOL), ("dbeta", t["dbeta"], db, DEFAULT_TOL)]


def op_rmsnorm(t, p):
    x, g = leaf(t["x"]), leaf(t["gamma"])
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + p["eps"]) * g
    dx, dg = grad_of((y * t["dy"]).sum(), x, g)
    return [("y", t["y"], y, DEFAULT_TOL), ("dx", t["dx"], dx, DEFAULT_TOL), ("dgamma", t["dgamma"], dg, DEFAULT_TOL)]


def op_gemm(t, p):
    x, w, b = leaf(t["x"]), leaf(t["w"]), leaf(t["b"])
    y = x @ w + b if p["layout"] == "in_out" else F.linear(x, w, b)
    dx, dw, db = grad_of((y * t["dy"]).sum(), x, w, b)
    return [("y", t["y"], y, DEFAULT_TOL), ("dx", t["dx"], dx, DEFAULT_TOL), ("dw", t["dw"], dw, DEFAULT_TOL),
            ("db", t["db"], db, DEFAULT_TOL)]


def op_grouped_gemm(t, p):
    x, w = leaf(t["x"]), leaf(t["w"])
    parts, offset = [], 0
    for e, count in enumerate(p["counts"]):
        parts.append(x[offset:offset + count] @ w[e])
        offset += count
    y = torch.cat(parts, 0)
    dx, dw = grad_of((y * t["dy"]).sum(), x, w)
    return [("y", t["y"], y, DEFAULT_TOL), ("dx", t["dx"], dx, DEFAULT_TOL), ("dw", t["dw"], dw, DEFAULT_TOL)]


def op_attention(t, p):
    q, k, v = leaf(t["q"]), leaf(t["k"]), leaf(t["v"])
    hq, hkv, d = q.shape[2], k.shape[2], q.shape[3]
    qh = q.permute(1, 2, 0, 3)                                   # [b, hq, s_q, d]
    kh = k.permute(1, 2, 0, 3).repeat_interleave(hq // hkv, 1)   # [b, hq, s_kv, d]
    vh = v.permute(1, 2, 0, 3).repeat_interleave(hq // hkv, 1)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    hidden = t["kv_pos"].unsqueeze(0) > t["q_pos"].unsqueeze(1)  # [s_q, s_kv]
    scores = scores.masked_fill(hidden, float("-inf"))
    out = (torch.softmax(scores, -1) @ vh).permute(2, 0, 1, 3)   # [s_q, b, hq, d]
    lse = torch.logsumexp(scores, -1)                            # [b, hq, s_q]
    dq, dk, dv = grad_of((out * t["dout"]).sum(), q, k, v)
    return [("out", t["out"], out, DEFAULT_TOL), ("lse", t["lse"], lse, DEFAULT_TOL),
            ("dq", t["dq"], dq, DEFAULT_TOL), ("dk", t["dk"], dk, DEFAULT_TOL), ("dv", t["dv"], dv, DEFAULT_TOL)]


def op_rope(t, p):
    x = leaf(t["x"])
    rot = p["rot_dim"]
    inv_freq = 1.0 / (p["base"] ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    freqs = torch.outer(t["positions"].double(), inv_freq)
    emb = torch.cat((freqs, freqs), -1)[:, None, None, :]        # [s, 1, 1, rot]
    xr, rest = x[..., :rot], x[..., rot:]
    x1, x2 = torch.chunk(xr, 2, dim=-1)
    rotated = torch.cat((-x2, x1), -1)                           # Megatron's rotate_half
    y = torch.cat((xr * emb.cos() + rotated * emb.sin(), rest), -1)
    (dx,) = grad_of((y * t["dy"]).sum(), x)
    return [("y", t["y"], y, DEFAULT_TOL), ("dx", t["dx"], dx, DEFAULT_TOL)]


def op_gelu(t, p):
    x = leaf(t["x"])
    y = F.gelu(x, approximate=p["approximate"])
    (dx,) = grad_of((y * t["dy"]).sum(), x)
    return [("y", t["y"], y, DEFAULT_TOL), ("dx", t["dx"], dx, DEFAULT_TOL)]


def op_swiglu(t, p):
    x = leaf(t["x"])
    gate, up = torch.chunk(x, 2, -1)
    y = F.silu(gate) * up
    (dx,) = grad_of((y * t["dy"]).sum(), x)
    return [("y", t["y"], y, DEFAULT_TOL), ("dx", t["dx"], dx, DEFAULT_TOL)]


def op_cross_entropy(t, p):
    logits = leaf(t["logits"])
    loss = F.cross_entropy(logits, t["targets"], reduction="none")
    (d_logits,) = grad_of((loss * t["d_loss"]).sum(), logits)
    return [("loss", t["loss"], loss, DEFAULT_TOL), ("d_logits", t["d_logits"], d_logits, DEFAULT_TOL)]


def megatron_routing(logits, p):
    """Megatron's topk_routing_with_score_function (softmax) + apply_router_token_dropping."""
    tokens, experts = logits.shape
    k = p["topk"]
    scores = torch.softmax(logits, -1)
    if p["pre_softmax"]:
        probs, idx = torch.topk(scores, k, dim=1)
    else:
        top, idx = torch.topk(logits, k, dim=1)
        probs = torch.softmax(top, -1)
    routing_probs = torch.zeros_like(logits).scatter(1, idx, probs)
    routing_map = torch.zeros_like(logits, dtype=torch.bool).scatter(1, idx, True)
    final_map = routing_map
    if p["capacity_factor"] > 0:
        capacity = math.ceil(tokens * k / experts * p["capacity_factor"])
        if capacity <= tokens:
            _, keep = torch.topk(routing_probs, capacity, dim=0)
            capacity_mask = torch.zeros_like(routing_map).scatter(0, keep, True)
            final_map = routing_map & capacity_mask
    return scores, idx, routing_map, final_map, routing_probs * final_map


def op_router(t, p):
    logits = leaf(t["logits"])
    tokens, experts = logits.shape
    k = p["topk"]
    scores, idx, routing_map, final_map, final_probs = megatron_routing(logits, p)
    tokens_per_expert = routing_map.sum(0).double()
    aux = (scores.sum(0) * tokens_per_expert).sum() * (experts * p["coeff"] / (k * tokens * tokens))
    weight = torch.zeros_like(t["logits"]).scatter(1, idx, t["d_probs"])
    (d_logits,) = grad_of((final_probs * weight).sum() + p["d_aux"] * aux, logits)
    return [("expert", t["expert"].reshape(tokens, k), idx, EXACT),
            ("kept", t["kept"].reshape(tokens, k), final_map.gather(1, idx).long(), EXACT),
            ("probs", t["probs"], final_probs.gather(1, idx), DEFAULT_TOL),
            ("aux_loss", t["aux_loss"], aux.reshape(1), DEFAULT_TOL),
            ("d_logits", t["d_logits"], d_logits, DEFAULT_TOL)]


def op_router_sigmoid(t, p):
    """Megatron-Core's topk_routing_with_score_function, score function sigmoid (DeepSeek-V3):
    s = sigmoid(logits); the expert bias is added for choosing only; with groups a token keeps the
    group_topk groups whose top (k / group_topk) choosing scores sum highest; weights
    s[chosen] / sum(s[chosen]) (k > 1), times the scaling factor."""
    logits = leaf(t["logits"])
    tokens, experts = logits.shape
    k, groups, gk = p["topk"], p["num_groups"], p["group_topk"]
    scores = torch.sigmoid(logits)
    choose = scores.detach() + t["bias"].double()
    if groups > 0 and gk > 0:
        group_scores = choose.view(tokens, groups, -1).topk(k // gk, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(group_scores, k=gk, dim=-1)[1]
        mask = torch.zeros(tokens, groups, dtype=torch.bool).scatter(1, group_idx, True)
        mask = mask.unsqueeze(-1).expand(tokens, groups, experts // groups).reshape(tokens, -1)
        choose = choose.masked_fill(~mask, float("-inf"))
    idx = torch.topk(choose, k, dim=1)[1]
    sel = scores.gather(1, idx)
    probs = sel / (sel.sum(-1, keepdim=True) + 1e-20) if k > 1 else sel
    if p["scaling"] > 0:
        probs = probs * p["scaling"]
    (d_logits,) = grad_of((probs * t["d_probs"]).sum(), logits)
    return [("expert", t["expert"].reshape(tokens, k), idx, EXACT),
            ("probs", t["probs"], probs, DEFAULT_TOL),
            ("d_logits", t["d_logits"], d_logits, DEFAULT_TOL)]


def op_permute(t, p):
    x, probs, expert_out = leaf(t["x"]), leaf(t["probs"]), leaf(t["expert_out"])
    tokens, k, experts = x.shape[0], p["topk"], p["experts"]
    idx = t["expert"].reshape(tokens, k)
    kept = t["kept"].reshape(tokens, k).bool()
    routing_map = torch.zeros(tokens, experts, dtype=torch.bool).scatter(1, idx, kept)
    # Megatron's permute: expert-major, token order kept (stable sort of the transposed map).
    flat = routing_map.T.contiguous().reshape(-1).long()
    _, order = torch.sort(flat, descending=True, stable=True)
    num_out = int(routing_map.sum())
    sorted_indices = order[:num_out] % tokens
    permuted = x.index_select(0, sorted_indices)
    (d_x,) = grad_of((permuted * t["d_permuted"]).sum(), x)
    # Megatron's unpermute with probs.
    dense_probs = torch.zeros(tokens, experts, dtype=torch.float64).scatter(1, idx, probs)
    permuted_probs = dense_probs.T.contiguous().masked_select(routing_map.T.contiguous())
    weighted = expert_out * permuted_probs.unsqueeze(1)
    y = torch.zeros(tokens, x.shape[1], dtype=torch.float64).scatter_add(
        0, sorted_indices.unsqueeze(1).expand(-1, x.shape[1]), weighted)
    d_expert_out, d_probs = grad_of((y * t["d_y"]).sum(), expert_out, probs)
    return [("permuted", t["permuted"], permuted, EXACT), ("d_x", t["d_x"], d_x, DEFAULT_TOL),
            ("y", t["y"], y, DEFAULT_TOL), ("d_expert_out", t["d_expert_out"], d_expert_out, DEFAULT_TOL),
            ("d_probs", t["d_probs"], d_probs, DEFAULT_TOL)]


def op_adamw(t, p):
    param = torch.nn.Parameter(t["p0"].clone())
    opt = torch.optim.AdamW([param], lr=p["lr"], betas=(p["beta1"], p["beta2"]), eps=p["eps"],
                            weight_decay=p["weight_decay"])
    for grad in t["grads"]:
        param.grad = grad.clone()
        opt.step()
    state = opt.state[param]
    return [("p", t["p"], param.detach(), DEFAULT_TOL), ("exp_avg", t["exp_avg"], state["exp_avg"], DEFAULT_TOL),
            ("exp_avg_sq", t["exp_avg_sq"], state["exp_avg_sq"], DEFAULT_TOL)]


def op_bf16_and_norm(t, p):
    x32 = t["x"].float()
    rounded = x32.to(torch.bfloat16).to(torch.float32).double()
    return [("rounded", t["rounded"], rounded, EXACT),
            ("sum_of_squares", t["sum_of_squares"], (t["x"] ** 2).sum().reshape(1), DEFAULT_TOL)]


OPS = {
    "embedding": op_embedding, "layernorm": op_layernorm, "rmsnorm": op_rmsnorm, "gemm": op_gemm,
    "grouped_gemm": op_grouped_gemm, "attention": op_attention, "rope": op_rope, "gelu": op_gelu,
    "swiglu": op_swiglu, "cross_entropy": op_cross_entropy, "router": op_router, "router_sigmoid": op_router_sigmoid, "permute": op_permute,
    "adamw": op_adamw, "bf16_and_norm": op_bf16_and_norm,
}


def relative_error(got, want):
    got, want = got.double(), want.detach().double()
    if got.shape != want.shape:
        return math.inf, f"shape {tuple(got.shape)} vs torch {tuple(want.shape)}"
    if not torch.isfinite(got).all():
        return math.inf, "non-finite values in tandem output"
    diff = (got - want).abs().max().item() if got.numel() else 0.0
    scale = want.abs().max().item() if want.numel() else 0.0
    return (diff / scale if scale > 0 else diff), ""


def compare(directory, manifest):
    failures, rows = 0, []
    for case in manifest["cases"]:
        tensors = load_tensors(directory, case)
        for name, got, want, tol in OPS[case["op"]](tensors, case["params"]):
            err, why = relative_error(got, want)
            ok = err <= tol
            failures += 0 if ok else 1
            rows.append((case["name"], name, err, tol, ok, why))
    width = max(len(f"{c}.{n}") for c, n, *_ in rows)
    for case_name, name, err, tol, ok, why in rows:
        label = f"{case_name}.{name}".ljust(width)
        print(f"{'ok  ' if ok else 'FAIL'} {label}  rel.err {err:9.2e}  tol {tol:7.1e}  {why}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", required=True, help="path of cpu_kernels_torch_driver")
    parser.add_argument("--seed", type=int, help="replay a seed (default: fresh each run)")
    parser.add_argument("--keep", help="write the driver's files here and keep them")
    args = parser.parse_args()
    global np, torch, F
    try:
        import numpy
        import torch as torch_module
        import torch.nn.functional as functional
    except ImportError as err:
        print(f"SKIPPED: PyTorch/NumPy not importable by {sys.executable} ({err}); "
              "install Debian's python3-torch", file=sys.stderr)
        return SKIP
    np, torch, F = numpy, torch_module, functional
    torch.set_num_threads(1)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 63)
    print(f"torch {torch.__version__}, seed {seed} (replay with --seed {seed})")
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or tmp
        subprocess.run([args.driver, "--seed", str(seed), "--out", directory], check=True)
        with open(os.path.join(directory, "manifest.json")) as f:
            manifest = json.load(f)
        failures = compare(directory, manifest)
    if failures:
        print(f"{failures} comparison(s) beyond tolerance; seed {seed}", file=sys.stderr)
        return 1
    print("all kernels match PyTorch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
