#!/usr/bin/env python3
"""Parallel layouts train exactly like one rank: `tandem train --backend cpu` on a tiny model,
10 iterations, fixed seed; the loss and grad-norm sequences (and the validation losses at
iterations 5 and 10) of the layout must equal those of single-rank training to a relative
tolerance (default 1e-5).

usage: train_equality.py --tandem BIN --model llama|gpt|moe --layout NAME [--ranks N]
       [--tolerance 1e-5] [-- EXTRA_MEGATRON_FLAGS...]

The layout's flags and rank count come from LAYOUTS below; --ranks overrides the count.
mpirun comes from $TANDEM_MPIRUN (tandem starts itself with --ranks)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

MODELS = {
    # LLaMA-style: RMSNorm, RoPE, SwiGLU, GQA (4 heads, 2 KV groups), untied, no biases.
    "llama": "--num-layers 4 --hidden-size 64 --num-attention-heads 4 --group-query-attention "
             "--num-query-groups 2 --seq-length 32 --max-position-embeddings 32 --vocab-size 128 "
             "--make-vocab-size-divisible-by 64 --swiglu --normalization RMSNorm "
             "--position-embedding-type rope --untie-embeddings-and-output-weights --disable-bias-linear",
    # GPT-style: LayerNorm, learned positions, GeLU, biases, tied embeddings.
    "gpt": "--num-layers 4 --hidden-size 64 --num-attention-heads 4 --seq-length 32 "
           "--max-position-embeddings 32 --vocab-size 128 --make-vocab-size-divisible-by 64",
    # Tiny MoE: the LLaMA block with 4 experts, top-2, every layer MoE.
    "moe": "--num-layers 2 --hidden-size 64 --num-attention-heads 4 --group-query-attention "
           "--num-query-groups 2 --seq-length 32 --max-position-embeddings 32 --vocab-size 128 "
           "--make-vocab-size-divisible-by 64 --swiglu --normalization RMSNorm "
           "--position-embedding-type rope --untie-embeddings-and-output-weights --disable-bias-linear "
           "--num-experts 4 --moe-router-topk 2 --moe-ffn-hidden-size 64 --moe-token-dispatcher-type alltoall "
           "--moe-aux-loss-coeff 0.1",
}
# The same MoE with Megatron's default all-gather dispatcher, a shared expert instead of the aux loss.
MODELS["moe-ag"] = MODELS["moe"].replace("alltoall", "allgather").replace("--moe-aux-loss-coeff 0.1",
                                                                          "--moe-shared-expert-intermediate-size 64")

# DeepSeek-style multi-latent attention on the LLaMA block: a q_lora_rank 32 / kv_lora_rank 16
# latent, per head 16 no-RoPE + 8 RoPE query/key channels and 16 value channels (so the core's
# value width differs from its query/key width), 4 heads. mla-noqlora projects queries directly.
MLA = ("--multi-latent-attention --kv-lora-rank 16 --qk-head-dim 16 --qk-pos-emb-head-dim 8 --v-head-dim 16")
MODELS["mla"] = MODELS["llama"].replace("--group-query-attention --num-query-groups 2 ", "") + \
    " --q-lora-rank 32 " + MLA
MODELS["mla-noqlora"] = MODELS["mla"].replace(" --q-lora-rank 32 ", " ")

# A tiny DeepSeek-V3: MLA, 4 layers of which the first is dense, then 8 routed experts top-2 in 2
# groups (group-limited: 1 group per token), sigmoid scores normalised and scaled, one shared
# expert, aux-loss-free balancing with an expert bias (a large rate, so that it changes choices
# within 10 iterations), the all-to-all dispatcher.
MODELS["deepseek"] = MODELS["mla"] + \
    " --moe-layer-freq ([0]*1+[1]*3) --num-experts 8 --moe-router-topk 2 --moe-ffn-hidden-size 32" \
    " --moe-shared-expert-intermediate-size 32 --moe-router-num-groups 2 --moe-router-group-topk 1" \
    " --moe-router-score-function sigmoid --moe-router-enable-expert-bias --moe-router-bias-update-rate 0.01" \
    " --moe-router-topk-scaling-factor 2.5 --moe-token-dispatcher-type alltoall"

# The same with one multi-token-prediction module (its layer MoE like the last decoder layer).
MODELS["deepseek-mtp"] = MODELS["deepseek"] + " --mtp-num-layers 1 --mtp-loss-scaling-factor 0.3"
MODELS["mla-mtp"] = MODELS["mla"] + " --mtp-num-layers 1"
# Two depths: depth 2 reads depth 1's layer output and predicts the token after the next.
MODELS["deepseek-mtp2"] = MODELS["deepseek"] + " --mtp-num-layers 2 --mtp-loss-scaling-factor 0.3"

# GPT with Megatron's dropout (hidden and attention): deterministic masks keyed by global indices.
MODELS["gpt-dropout"] = MODELS["gpt"] + " --hidden-dropout 0.1 --attention-dropout 0.1"

TRAINING = ("--micro-batch-size 1 --global-batch-size 8 --train-iters 10 --lr 1e-3 --min-lr 1e-4 "
            "--lr-decay-style cosine --lr-warmup-iters 2 --seed 1234 --init-method-std 0.02 --mock-data "
            "--hidden-dropout 0 --attention-dropout 0 --clip-grad 1.0 --weight-decay 0.1 --log-interval 5 "
            "--eval-interval 5 --eval-iters 1")

TP, PP, DP = "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--use-distributed-optimizer"
LAYOUTS = {
    "single": (1, ""),
    "tp2": (2, f"{TP} 2"),
    "tp2-sp": (2, f"{TP} 2 --sequence-parallel"),
    "dp2": (2, ""),
    "dp2-distopt": (2, DP),
    "dp2-distopt-overlap": (2, f"{DP} --overlap-grad-reduce --overlap-param-gather"),
    "cp2": (2, "--context-parallel-size 2"),
    "ep2": (2, "--expert-model-parallel-size 2"),
    "ep2-distopt": (2, f"--expert-model-parallel-size 2 {DP}"),
    "ep4": (4, "--expert-model-parallel-size 4"),
    "ep2-pp2": (4, f"--expert-model-parallel-size 2 {PP} 2"),
    "tp2-sp-ep2": (4, f"{TP} 2 --sequence-parallel --expert-model-parallel-size 2 --expert-tensor-parallel-size 1"),
    "tp2-sp-etp2": (2, f"{TP} 2 --sequence-parallel"),
    "tp2-sp-etp2-ep2-pp2": (8, f"{TP} 2 --sequence-parallel --expert-model-parallel-size 2 {PP} 2"),
    "tp2-sp-etp2-ep2": (4, f"{TP} 2 --sequence-parallel --expert-model-parallel-size 2"),
    "tp2-pp2-dp2": (8, f"{TP} 2 {PP} 2 --sequence-parallel {DP}"),
    "tp2-pp2-dp2-overlap": (8, f"{TP} 2 {PP} 2 --sequence-parallel {DP} --overlap-grad-reduce --overlap-param-gather "
                               "--num-layers-per-virtual-pipeline-stage 1"),
    "pp2-dp2-zb-h1-overlap": (4, f"{PP} 2 --pipeline-schedule zb-h1 --overlap-grad-reduce"),
    "cp2-pp2-dp2": (8, f"--context-parallel-size 2 {PP} 2 {DP} --overlap-grad-reduce"),
    "interleaved-pp2x2": (2, f"{PP} 2 --num-layers-per-virtual-pipeline-stage 1"),
    "recompute-full": (2, f"{PP} 2 --recompute-granularity full --recompute-method uniform --recompute-num-layers 1"),
    "recompute-selective": (2, f"{TP} 2 --recompute-activations"),
    "cp2-recompute-selective": (2, "--context-parallel-size 2 --recompute-activations"),
}
# Model flags a layout needs on both sides of the comparison (V-shaped and interleaved schedules
# put two stages on every rank: 8 stages of PP4 need 8 layers).
MODEL_OVERRIDES = {}
for schedule in ["1f1b", "gpipe", "zb-h1", "zb-h2", "zb-v", "dualpipe", "dualpipev", "interleaved"]:
    for pp in (2, 4):
        LAYOUTS[f"pp{pp}-{schedule}"] = (pp, f"{PP} {pp} --pipeline-schedule {schedule}")
        if pp == 4 and schedule in ("zb-v", "dualpipev", "interleaved"):
            MODEL_OVERRIDES[f"pp{pp}-{schedule}"] = "--num-layers 8"
# DualPipe at PP 8 receives some activations in another order than they are sent
# (schedules/message_order.h): MPI matches them by tag. 8 stages of one layer, 2 * PP microbatches.
LAYOUTS["pp8-dualpipe"] = (8, f"{PP} 8 --pipeline-schedule dualpipe")
MODEL_OVERRIDES["pp8-dualpipe"] = "--num-layers 8 --global-batch-size 16"
# MoE with TP needs SP; this variant trains without the aux loss and with a shared expert.
LAYOUTS["tp2-sp-ep2-shared"] = LAYOUTS["tp2-sp-ep2"]
MODEL_OVERRIDES["tp2-sp-ep2-shared"] = "--moe-aux-loss-coeff 0 --moe-shared-expert-intermediate-size 64"


def train(tandem, ranks, flags, workdir, tag):
    out = os.path.join(workdir, tag + ".json")
    cmd = [tandem, "train", "--backend", "cpu", "--json", out]
    if ranks > 1:
        cmd += ["--ranks", str(ranks)]
    cmd += ["--"] + flags.split()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"{tag}: tandem train exited with {proc.returncode}: {' '.join(cmd)}")
    with open(out) as f:
        return json.load(f)


def compare(name, ref, got, tol):
    bad = []
    for i, (a, b) in enumerate(zip(ref, got)):
        if abs(a - b) > tol * max(abs(a), abs(b), 1e-30):
            bad.append(f"  iteration {i + 1}: single {a:.9g}, layout {b:.9g}, rel {abs(a - b) / max(abs(a), 1e-30):.2e}")
    if len(ref) != len(got):
        bad.append(f"  {len(ref)} vs {len(got)} iterations")
    worst = max((abs(a - b) / max(abs(a), abs(b), 1e-30) for a, b in zip(ref, got)), default=0.0)
    print(f"{name}: {len(got)} iterations, worst relative difference {worst:.2e}")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--model", default="llama", choices=sorted(MODELS))
    ap.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    ap.add_argument("--ranks", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1e-5)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    ranks, layout_flags = LAYOUTS[args.layout]
    ranks = args.ranks or ranks
    base = " ".join([TRAINING, MODELS[args.model], MODEL_OVERRIDES.get(args.layout, "")] + args.extra)
    with tempfile.TemporaryDirectory() as workdir:
        ref = train(args.tandem, 1, base, workdir, "single")
        got = train(args.tandem, ranks, base + " " + layout_flags, workdir, args.layout)
    bad = compare("loss", ref["losses"], got["losses"], args.tolerance)
    bad += compare("grad norm", ref["grad_norms"], got["grad_norms"], args.tolerance)
    bad += compare("validation loss", [v for _, v in ref["eval_losses"]], [v for _, v in got["eval_losses"]],
                   args.tolerance)
    if ref["lrs"] != got["lrs"]:
        bad.append("  learning rates differ")
    if ref["losses"][-1] >= ref["losses"][0]:
        bad.append(f"  the loss did not decrease: {ref['losses'][0]:.4f} -> {ref['losses'][-1]:.4f}")
    if bad:
        print(f"{args.model} {args.layout} on {ranks} ranks differs from single-rank training:")
        print("\n".join(bad))
        return 1
    print(f"{args.model} {args.layout} on {ranks} ranks equals single-rank training (tolerance {args.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
