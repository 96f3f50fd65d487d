#!/usr/bin/env python3
"""Does `tandem plan` find the published layouts? For every row of a reproduce set
(experiments/reproduce/*.json) the row's layout flags are removed, `tandem plan` chooses one for the
row's model, GPU count, sequence and global batch on the set's cluster and stack, and the script
prints where the published layout lands in tandem's ranking and how the pick's simulated time
compares with the published layout's (simulated with `tandem simulate` when the plan did not).

usage: experiments/plan/published_layouts.py [SET.json] [--top K] [--tandem PATH] [--rows LABEL,...]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

# Layout flags the planner chooses, with the number of values each takes.
LAYOUT = {"--tensor-model-parallel-size": 1, "--pipeline-model-parallel-size": 1,
          "--num-layers-per-virtual-pipeline-stage": 1, "--num-virtual-stages-per-pipeline-rank": 1,
          "--micro-batch-size": 1, "--sequence-parallel": 0, "--context-parallel-size": 1,
          "--recompute-granularity": 1, "--recompute-method": 1, "--recompute-num-layers": 1}


def split(flags):
    """(flags without the layout ones, {layout flag: value})"""
    rest, layout, i = [], {}, 0
    while i < len(flags):
        f = flags[i]
        if f in LAYOUT:
            layout[f] = flags[i + 1] if LAYOUT[f] else True
            i += 1 + LAYOUT[f]
        else:
            rest.append(f)
            i += 1
    return rest, layout


def flag_value(flags, name, default=None):
    return flags[flags.index(name) + 1] if name in flags else default


def published(layout, num_layers):
    tp = int(layout.get("--tensor-model-parallel-size", 1))
    pp = int(layout.get("--pipeline-model-parallel-size", 1))
    vp = None
    if "--num-layers-per-virtual-pipeline-stage" in layout:
        vp = num_layers // pp // int(layout["--num-layers-per-virtual-pipeline-stage"])
    elif "--num-virtual-stages-per-pipeline-rank" in layout:
        vp = int(layout["--num-virtual-stages-per-pipeline-rank"])
    return {"tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
            "virtual_pipeline_model_parallel_size": vp if vp and vp > 1 else None,
            "context_parallel_size": int(layout.get("--context-parallel-size", 1)),
            "micro_batch_size": int(layout.get("--micro-batch-size", 1)),
            "recompute_granularity": layout.get("--recompute-granularity")}


def matches(c, want):
    return all(c[k] == v for k, v in want.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("set", nargs="?", default="experiments/reproduce/megatron-h100.json")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--tandem", default="build/tandem")
    ap.add_argument("--rows", default="")
    a = ap.parse_args()
    d = json.load(open(a.set))
    common = d.get("common_flags", [])
    rows = [r for r in d["rows"] if not a.rows or r["label"] in a.rows.split(",")]
    print("%-8s %6s  %-28s %5s  %-28s %9s %9s %6s" % ("row", "GPUs", "published layout", "rank", "tandem's pick",
                                                    "pick (s)", "publ. (s)", "plan s"))
    worst = 0
    for r in rows:
        flags_all = common + r["flags"]
        rest, _ = split(flags_all)
        _, layout = split(common)
        layout.update(split(r["flags"])[1])
        want = published(layout, int(flag_value(flags_all, "--num-layers")))
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "plan.json")
            cmd = [a.tandem, "plan", "--cluster", d["cluster"], "--gpus", str(r["gpus"]), "--top", str(a.top),
                   "--json", out]
            if d.get("stack"):
                cmd += ["--stack", d["stack"]]
            cmd += ["--"] + rest
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                print("%-8s plan failed: %s" % (r["label"], p.stderr.strip()[:300]))
                worst = max(worst, 10**9)
                continue
            plan = json.load(open(out))
        cands = plan["candidates"]
        found = [c for c in cands if matches(c, want)]
        rank = found[0]["rank"] if found else None
        pub_time = found[0]["iteration_time_s"] if found and found[0]["simulated"] else None
        if pub_time is None:
            sim = os.path.join(tempfile.gettempdir(), "tandem-published-%d.json" % os.getpid())
            scmd = [a.tandem, "simulate", "--cluster", d["cluster"], "--gpus", str(r["gpus"]), "--json", sim]
            if d.get("stack"):
                scmd += ["--stack", d["stack"]]
            subprocess.run(scmd + ["--"] + flags_all, capture_output=True, text=True, check=True)
            pub_time = json.load(open(sim))["iteration_time_s"]
            os.remove(sim)
        best = plan["best"]
        desc = lambda c: "TP%d PP%d VP%s MBS%d CP%d %s" % (
            c["tensor_model_parallel_size"], c["pipeline_model_parallel_size"],
            c["virtual_pipeline_model_parallel_size"] or "-", c["micro_batch_size"], c["context_parallel_size"],
            c["recompute_granularity"] or "")
        print("%-8s %6d  %-28s %5s  %-28s %9.3f %9.3f %6.1f" % (
            r["label"], r["gpus"], desc(want), rank if rank else "-", desc(best), best["iteration_time_s"], pub_time,
            plan["analytic_seconds"] + plan["simulation_seconds"]))
        worst = max(worst, rank or 10**9)
    print("worst rank of a published layout: %s" % (worst if worst < 10**9 else "not found"))


if __name__ == "__main__":
    sys.exit(main())
