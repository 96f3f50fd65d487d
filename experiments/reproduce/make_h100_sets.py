#!/usr/bin/env python3
"""Writes the H100 recipe sets of experiments/reproduce/ from a table of published NVIDIA runs.

usage: make_h100_sets.py RECIPES.json [OUT_DIR]

RECIPES.json is a list of published H100 pre-training runs (one object per run: source, release,
model, seq_len, num_gpus, precision, tp/pp/cp/vp/ep/etp/fsdp, micro_batch, global_batch and the
published step_time_s or tokens_per_sec_per_gpu; field reference in the table's own notes).
One set per source. Every layout field a row publishes becomes a Megatron flag of that row; what
a source does not publish is assumed once per source (the set's `assumptions`) or once per model
family (`families.NAME.assumptions`), never per row. Rows that cannot be compared are listed in the
set's `skipped` with the reason. The sets are data: rerun this script when the table changes.
"""
import json
import os
import sys

# Model families: the table's model names -> tandem preset and per-family facts of the recipe.
FAMILIES = {
    "llama3-8b": {"model": "llama3-8b", "names": ["LLAMA3_8B", "LLAMA3-8B", "Llama 3.1 8B"]},
    "llama3-70b": {"model": "llama3-70b", "names": ["LLAMA3_70B", "LLAMA3-70B", "Llama 3.1 70B"]},
    "llama3.1-405b": {"model": "llama3-405b", "names": ["LLAMA3.1_405B"]},
    "llama2-7b": {"model": "llama2-7b", "names": ["LLAMA2-7B"]},
    "llama2-13b": {"model": "llama2-13b", "names": ["LLAMA2-13B"]},
    "llama2-70b": {"model": "llama2-70b", "names": ["LLAMA2-70B"]},
    "gpt3-5b": {"model": "nemo-gpt3-5b", "names": ["GPT3-5B"]},
    "gpt3-20b": {"model": "nemo-gpt3-20b", "names": ["GPT3-20B"]},
    "gpt3-175b": {"model": "gpt3-175b", "names": ["GPT3-175B", "GPT-3 175B"]},
    "nemotron-8b": {"model": "nemotron-8b", "names": ["Nemotron-8B"]},
    "nemotron-22b": {"model": "nemotron-22b", "names": ["Nemotron-22B"]},
    "nemotron4-340b": {"model": "nemotron-4-340b", "names": ["Nemotron-340B"]},
    "mixtral-8x7b": {"model": "mixtral-8x7b", "names": ["MIXTRAL-8x7B"]},
    "mixtral-8x3b": {"model": "mixtral-8x3b", "names": ["MIXTRAL-8x3B"]},
    "qwen3-30b-a3b": {"model": "qwen3-30b-a3b", "names": ["Qwen3_30B_a3B", "Qwen3_30B_a3B (tokendrop)"]},
    "qwen3-235b-a22b": {"model": "qwen3-235b-a22b", "names": ["Qwen3_235B_a22B", "Qwen3_235B_a22B (tokendrop)"]},
}
# Mixture-of-experts families: their rows, whatever the source, form one set of their own
# (MOE_SET), so that MoE accuracy is reported apart from the dense sets.
MOE_FAMILIES = {"mixtral-8x7b", "mixtral-8x3b", "qwen3-30b-a3b", "qwen3-235b-a22b"}

# Facts of a family's recipes that hold for every source (model-level training settings).
FAMILY_NOTES = {
    "llama3.1-405b": (["--account-for-embedding-in-pipeline-split", "--account-for-loss-in-pipeline-split"],
                      "126 layers do not split evenly over PP x VP = 64 virtual stages: the recipe counts the "
                      "embedding and the loss as one layer each (Megatron's account_for_embedding/loss_in_pipeline_split), "
                      "so the first and the last virtual stage hold one decoder layer, the others two"),
    "gpt3-175b": (["--attention-dropout", "0.1", "--hidden-dropout", "0.1"],
                  "GPT-3 recipes keep dropout 0.1 (NeMo gpt3 configs)"),
    "gpt3-5b": (["--attention-dropout", "0.1", "--hidden-dropout", "0.1"], "GPT-3 recipes keep dropout 0.1 (NeMo gpt3 configs)"),
    "gpt3-20b": (["--attention-dropout", "0.1", "--hidden-dropout", "0.1"], "GPT-3 recipes keep dropout 0.1 (NeMo gpt3 configs)"),
}
FAMILY_NOTES["mixtral-8x7b"] = (
    ["--expert-model-parallel-size", "8", "--moe-token-dispatcher-type", "alltoall", "--moe-expert-capacity-factor", "1.0",
     "--moe-pad-expert-input-to-capacity", "--attention-dropout", "0", "--hidden-dropout", "0"],
    "the table prints no EP: EP 8, the all-to-all dispatcher and capacity factor 1.0 with padding as the "
    "launcher's mixtral_8x7b config (no grouped GEMM there; tandem's expert GEMMs are not slowed for that); no dropout")
FAMILY_NOTES["mixtral-8x3b"] = (
    ["--moe-token-dispatcher-type", "alltoall", "--attention-dropout", "0", "--hidden-dropout", "0"],
    "the table prints no EP and the launcher's mixtral_8x3b config has EP 1 (the 8 experts on every GPU), "
    "grouped GEMM, no capacity factor (dropless); no dropout")
QWEN3_FLAGS = ["--expert-tensor-parallel-size", "1", "--moe-grouped-gemm", "--moe-permute-fusion",
               "--moe-router-force-load-balancing", "--attention-dropout", "0", "--hidden-dropout", "0"]
QWEN3_NOTE = ("expert TP 1 (the recipes' expert_tensor_parallel_size); token-dropless with the router forced to "
              "balance tokens over experts (the page's footnote), except rows labelled tokendrop (capacity factor 1.0 "
              "with padding, as Megatron-Bridge's token-drop setting); grouped expert GEMMs and fused permutation as the "
              "Qwen3 recipes set; no dropout. The dispatcher and EP overlap are the H100 performance recipe's "
              "(Megatron-Bridge scripts/performance/configs/qwen/qwen3_workload_base_configs.py) for the rows that "
              "publish its layout: 30B-A3B with EP 16 and no pipeline runs the flex dispatcher (HybridEP), rows with "
              "the earlier PP 2 x EP 8 layout the all-to-all dispatcher; 235B-A22B (TP 2, PP 8, VP 4, EP 32, the "
              "recipe's layout in every release) the all-to-all dispatcher with --overlap-moe-expert-parallel-comm")
FAMILY_NOTES["qwen3-30b-a3b"] = (QWEN3_FLAGS, QWEN3_NOTE)
FAMILY_NOTES["qwen3-235b-a22b"] = (QWEN3_FLAGS + ["--account-for-embedding-in-pipeline-split",
                                                  "--account-for-loss-in-pipeline-split"],
                                   QWEN3_NOTE + "; 94 layers over PP x VP = 32 virtual stages: the embedding and the "
                                   "loss counted as one layer each (Megatron's account_for_embedding/loss_in_pipeline_split), "
                                   "3 per virtual stage")
MOE_SET = {
    "file": "nvidia-moe-h100.json",
    "name": "NVIDIA mixture-of-experts pre-training on DGX H100 (NeMo launcher 24.05, Megatron-Bridge 25.09-26.06)",
    "metric": "tokens_per_s_per_gpu",
    "assumptions": "MoE rows of the NeMo-Framework-Launcher README table and the Megatron-Bridge performance summary. "
                   "Both publish layout, batch and tokens/s per GPU only; recompute is assumed off; the Bridge 25.09 "
                   "rows have no precision column and are taken as FP8 like every later release.",
}
NO_DROPOUT = ["--attention-dropout", "0", "--hidden-dropout", "0"]
NO_DROPOUT_NOTE = "no dropout (the Llama and Nemotron recipes set hidden and attention dropout to 0)"

# Settings every NVIDIA recipe of these sources shares (NeMo launcher / NeMo 2 / Megatron-Bridge
# performance configs): bf16 mixed precision with Transformer Engine, flash/cuDNN attention, the
# distributed optimizer with overlapped gradient reduce-scatter and parameter all-gather.
COMMON_FLAGS = ["--bf16", "--attention-backend", "auto", "--use-distributed-optimizer",
                "--overlap-grad-reduce", "--overlap-param-gather", "--grad-reduce-in-bf16"]
COMMON_ASSUMPTIONS = (
    "bf16 mixed precision with Transformer Engine, flash/cuDNN attention (Megatron-Core's auto backend); "
    "the distributed optimizer with overlapped gradient reduce-scatter and parameter all-gather; "
    "a bf16 gradient buffer reduced in bf16 (--grad-reduce-in-bf16: NVIDIA's performance recipes set "
    "grad_reduce_in_fp32 = False, the NeMo launcher's H100 recipes optim.grad_sync_dtype = bf16); "
    "sequence parallelism and TP communication overlap (userbuffers, --tp-comm-overlap) whenever TP > 1; "
    "--overlap-p2p-communication whenever the pipeline is interleaved (VP > 1); FP8 rows run TE's hybrid "
    "format (E4M3 forward, E5M2 backward: --fp8-format hybrid; the scaling recipe, delayed or current, "
    "is not modelled); the Megatron-Core default 1F1B schedule when PP > 1 and VP = 1.")

SOURCES = {
    "NVIDIA DGX Cloud Benchmarking recipes (dgxc-benchmarking) README results table": {
        "file": "nvidia-dgxc-h100.json",
        "name": "NVIDIA DGX Cloud benchmarking recipes (dgxc-benchmarking v24.11.1-v25.04): Llama 3.1 8B/70B and GPT-3 175B on DGX H100",
        "metric": "iteration_time_s",
        "assumptions": "The launch YAMLs of v24.11.1 and v25.02 state no activation recompute, SP and TP overlap when TP > 1, "
                       "P2P overlap, the distributed optimizer with overlapped grad/param sync, flash attention and TE "
                       "(fp8_hybrid when FP8); the v25.04 rows (NeMo 2 recipes) publish only the layout and are assumed "
                       "to run the same settings. Published step time is the log's step timing (the last step, or the "
                       "mean of iterations 11-44 from v25.05), compared with the simulated iteration time.",
    },
    "NeMo Framework performance summary (24.07)": {
        "file": "nvidia-nemo-perf-h100.json",
        "name": "NeMo Framework performance summary (NeMo 24.07, 25.02): pre-training on DGX H100, FP8",
        "metric": "tokens_per_s_per_gpu",
        "assumptions": "The page publishes layout, batch and tokens/s per GPU only; recompute is assumed off "
                       "(the NeMo performance configs of these models run without it). A VP column of 1 means no interleaving.",
    },
    "NeMo-Framework-Launcher README benchmark table": {
        "file": "nvidia-nemo-launcher-h100.json",
        "name": "NeMo-Framework-Launcher README benchmark table (2024-04, NeMo 24.05): pre-training on DGX H100, FP8",
        "metric": "tokens_per_s_per_gpu",
        "assumptions": "The table publishes layout, batch and tokens/s per GPU, no VP: rows run without interleaving "
                       "(Megatron-Core's 1F1B); recompute is assumed off as in the launcher's performance configs.",
    },
    "Megatron-Bridge performance summary": {
        "file": "nvidia-megatron-bridge-h100.json",
        "name": "Megatron-Bridge performance summary (NeMo 25.09-26.06): dense pre-training on DGX H100",
        "metric": "tokens_per_s_per_gpu",
        "assumptions": "The page publishes layout, batch and tokens/s per GPU only; recompute is assumed off. The 25.09 "
                       "table has no precision column; its rows are taken as FP8 like every later release of the "
                       "same models (its tokens/s equal theirs within 5%).",
    },
}
# Rows whose printed layout cannot hold the model in 80 GB by the memory accounting
# (models/activations.cpp, models/memory.cpp), with the arithmetic.
LAYOUT_DOES_NOT_FIT = {
    "nfl-2024-04-nemotron-22b-pretrain-16-fp8-h100":
        "printed layout TP1 PP4 with micro-batch 2 at sequence 4096 needs 90.5 GiB on the first pipeline rank "
        "(5.3B parameters: 11.4 GiB weights, 11.4 GiB bf16 gradients, 17.1 GiB optimizer shard over DP 4; 1F1B keeps "
        "4 micro-batches x 10 layers x 1.27 GiB of activations without recompute); the launcher's own config for "
        "this model is TP2 PP4 VP10 with sequence parallelism, and the 24.05 table prints TP2 for the same model",
}

# Rows that ran but that tandem's memory accounting puts above 80 GB, with the reason: still
# simulated and compared (the row's expected_oom; reproduce --resolve fails once such a row fits).
EXPECTED_OOM = {
    "nfl-24.05-mixtral-mixtral-8x3b-pretrain-16-fp8-h100":
        "EP 1 keeps all 8 experts (18.3B parameters) on every GPU: 34 GiB of bf16 weights and 34 GiB of bf16 "
        "gradients before optimizer state and activations; the launcher's FP8 script for this model keeps the weights "
        "in FP8 (fp8_params=True, Megatron's --fp8-param-gather: 1 byte per parameter), which tandem does not model",
    "mb-25.11-qwen3-30b-a3b-pretrain-16-fp8-cs-h100":
        "PP 2 x VP 24 with micro-batch 2 keeps up to 26 micro-batch chunks of activations on the first pipeline rank "
        "without recompute (the page publishes none); the recipe's memory settings (recompute modules, optimizer "
        "state precision) are not published and not assumed",
    "mb-25.09-qwen3-30b-a3b-pretrain-16-na-h100":
        "PP 2 x VP 24 with micro-batch 2 keeps up to 26 micro-batch chunks of activations on the first pipeline rank "
        "without recompute (the page publishes none); the recipe's memory settings (recompute modules, optimizer "
        "state precision) are not published and not assumed",
}

# Sources kept out of the sets, with the reason.
SKIPPED_SOURCES = {
    "NeMo long-sequence performance (context parallel)":
        "only TFLOP/s published (full-attention FLOP convention), no step time or tokens/s, no micro-batch size",
}
SOURCES["NeMo Framework performance summary (25.02) - stored page excerpt"] = SOURCES["NeMo Framework performance summary (24.07)"]


def family_of(model):
    for fam, spec in FAMILIES.items():
        if model in spec["names"]:
            return fam
    return None


def skip_reason(r):
    if r["task"] != "pretrain":
        return "fine-tuning run (sequence packing, not modelled)"
    if r.get("consistency") not in (None, "ok"):
        return "published numbers inconsistent: " + r["consistency"]
    if "H100-SXM5-80GB" not in r["gpu"]:
        return "not an H100 SXM5 80GB system"
    if r.get("fsdp"):
        return "Megatron-FSDP (FSDP = %s) is not modelled by tandem" % r["fsdp"]
    if family_of(r["model"]) is None:
        return "model not modelled: " + r["model"] + unsupported_note(r["model"])
    if r["id"] in LAYOUT_DOES_NOT_FIT:
        return LAYOUT_DOES_NOT_FIT[r["id"]]
    if r["micro_batch"] is None:
        return "micro-batch size not published"
    if r["step_time_s"] is None and r["tokens_per_sec_per_gpu"] is None:
        return "only TFLOP/s published (FLOP conventions differ by source): no step time or tokens/s"
    return None


def unsupported_note(model):
    if "Nemotron_3_Nano" in model:
        return " (hybrid Mamba-attention model; tandem has no Mamba layers)"
    if "GPT OSS" in model:
        return " (sliding-window attention with attention sinks, not modelled)"
    if "DeepSeek" in model:
        return (" (the H100 recipe's --pipeline-model-parallel-layout Et|(tt|)*30mL puts MTP and the loss on a "
                "virtual stage without decoder layers, which tandem's pipeline split cannot express)")
    return ""


def precision_flags(r):
    p = r["precision"] or ("FP8" if r["source"] == "Megatron-Bridge performance summary" else None)
    if p is None:
        raise SystemExit(r["id"] + ": precision not published and no source rule")
    if p.startswith("FP8"):
        return "fp8", ["--fp8-format", "hybrid"]
    if p == "BF16":
        return "bf16", []
    raise SystemExit(r["id"] + ": precision = " + p + ": expected BF16 or FP8*")


def row_flags(r, fam):
    tp, pp = r["tp"] or 1, r["pp"] or 1
    cp, vp = r["cp"] or 1, r["vp"] or 1
    f = ["--seq-length", str(r["seq_len"]), "--max-position-embeddings", str(r["seq_len"]),
         "--tensor-model-parallel-size", str(tp), "--pipeline-model-parallel-size", str(pp),
         "--context-parallel-size", str(cp), "--micro-batch-size", str(r["micro_batch"]),
         "--global-batch-size", str(r["global_batch"])]
    if tp > 1:
        f += ["--sequence-parallel", "--tp-comm-overlap"]
    if vp > 1:
        f += ["--num-virtual-stages-per-pipeline-rank", str(vp), "--overlap-p2p-communication"]
    if (r["ep"] or 1) > 1:
        f += ["--expert-model-parallel-size", str(r["ep"])]
    if "(tokendrop)" in r["model"]:
        f += ["--moe-expert-capacity-factor", "1.0", "--moe-pad-expert-input-to-capacity"]
    return f + qwen3_dispatch_flags(r, fam, pp)


def qwen3_dispatch_flags(r, fam, pp):
    """The H100 recipe's dispatcher for the rows that publish its layout (QWEN3_NOTE)."""
    if fam == "qwen3-235b-a22b":
        return ["--moe-token-dispatcher-type", "alltoall", "--overlap-moe-expert-parallel-comm"]
    if fam == "qwen3-30b-a3b":
        return ["--moe-token-dispatcher-type", "flex" if (pp == 1 and r["ep"] == 16) else "alltoall"]
    return []


def published(r, metric):
    if metric == "iteration_time_s":
        return {"iteration_time_s": r["step_time_s"]}
    return {"tokens_per_s_per_gpu": r["tokens_per_sec_per_gpu"]}


def family_entries(used):
    out = {}
    for fam in sorted(used):
        flags, note = FAMILY_NOTES.get(fam, (NO_DROPOUT, NO_DROPOUT_NOTE))
        if fam in ("llama3.1-405b",):
            flags, note = flags + NO_DROPOUT, note + "; " + NO_DROPOUT_NOTE
        out[fam] = {"model": FAMILIES[fam]["model"], "flags": flags, "assumptions": note}
    return out


def build(rows):
    sets = {}
    for r in rows:
        spec = SOURCES.get(r["source"])
        if spec is not None and family_of(r["model"]) in MOE_FAMILIES:
            spec = MOE_SET
        if spec is None:
            print("no set: %s: %s" % (r["id"], SKIPPED_SOURCES.get(r["source"], "source not mapped to a set")))
            continue
        s = sets.setdefault(spec["file"], {"spec": spec, "rows": [], "skipped": [], "families": set()})
        reason = skip_reason(r)
        if reason is None and spec["metric"] == "iteration_time_s" and r["step_time_s"] is None:
            reason = "no step time published"
        if reason is None and spec["metric"] == "tokens_per_s_per_gpu" and r["tokens_per_sec_per_gpu"] is None:
            reason = "no tokens/s published"
        if reason:
            s["skipped"].append({"id": r["id"], "reason": reason})
            continue
        fam = family_of(r["model"])
        prec, pflags = precision_flags(r)
        s["families"].add(fam)
        label = "%s %s %s %dxH100" % (r["release"].split(" container")[0].split(" /")[0].replace("dgxc-benchmarking ", ""),
                                      fam, prec.upper(), r["num_gpus"])
        row = {"id": r["id"], "label": label, "family": fam, "precision": prec, "gpus": r["num_gpus"],
               "flags": row_flags(r, fam) + pflags, "published": published(r, spec["metric"]),
               "source_ref": r["source_ref"]}
        if r["id"] in EXPECTED_OOM:
            row["expected_oom"] = EXPECTED_OOM[r["id"]]
        s["rows"].append(row)
    return sets


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    rows = json.load(open(sys.argv[1]))
    out_dir = sys.argv[2] if len(sys.argv) == 3 else os.path.dirname(os.path.abspath(__file__))
    for file, s in sorted(build(rows).items()):
        spec = s["spec"]
        doc = {"name": spec["name"], "source": "published NVIDIA H100 recipe runs (each row's source_ref)",
               "cluster": "dgx-h100", "metric": spec["metric"],
               "assumptions": COMMON_ASSUMPTIONS + " " + spec["assumptions"],
               "common_flags": COMMON_FLAGS, "families": family_entries(s["families"]),
               "rows": s["rows"], "skipped": s["skipped"]}
        with open(os.path.join(out_dir, file), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print("%s: %d rows, %d skipped" % (file, len(s["rows"]), len(s["skipped"])))


if __name__ == "__main__":
    main()
