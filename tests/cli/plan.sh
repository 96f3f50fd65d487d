#!/usr/bin/env bash
# `tandem plan`: the JSON scripts read (best, ranked candidates with Megatron's argument names,
# rejections per reason), the CSV, pinned fields, the pasted flags simulating to the reported time,
# and the same answer on a second run.
# usage: plan.sh TANDEM PYTHON3
set -euo pipefail
tandem=$1 python=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
flags=(--num-layers 8 --hidden-size 1024 --num-attention-heads 16 --seq-length 2048 --max-position-embeddings 2048
       --vocab-size 32000 --global-batch-size 64 --bf16 --use-distributed-optimizer --overlap-grad-reduce)
"$tandem" plan --cluster dgx-h100 --gpus 16 --top 5 --json a.json --csv a.csv -- "${flags[@]}" >out.txt
grep -q '^Best: ' out.txt
grep -q 'Kendall tau' out.txt
"$tandem" plan --cluster dgx-h100 --gpus 16 --top 5 --json b.json -- "${flags[@]}" >/dev/null
cmp <("$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); [d.pop(k) for k in ("analytic_seconds","candidates_per_second","evaluations_per_second","simulation_seconds")]; print(json.dumps(d,sort_keys=True))' a.json) \
    <("$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); [d.pop(k) for k in ("analytic_seconds","candidates_per_second","evaluations_per_second","simulation_seconds")]; print(json.dumps(d,sort_keys=True))' b.json)
"$python" - <<'PY'
import csv, json
d = json.load(open("a.json"))
names = ["tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
         "context_parallel_size", "expert_model_parallel_size", "micro_batch_size", "recompute_granularity",
         "use_distributed_optimizer", "iteration_time_s", "peak_memory_gib", "simulated", "megatron_args"]
c = d["candidates"]
assert d["best"] == c[0]
for x in c:
    for n in names:
        assert n in x, n
    assert x["use_distributed_optimizer"] is True                  # pinned by the flags
    assert x["tensor_model_parallel_size"] * x["pipeline_model_parallel_size"] * x["context_parallel_size"] * x["data_parallel_size"] == 16
assert [x["simulated"] for x in c[:5]] == [True] * 5 and not any(x["simulated"] for x in c[5:])
t = [x["iteration_time_s"] for x in c[:5]]
assert t == sorted(t), t
assert not any(x["oom"] for x in c[:10])
assert d["feasible"] == len(c) and d["enumerated"] == len(c) + sum(d["rejected"].values())
assert all(k for k in d["rejected"]) and -1 <= d["kendall_tau"] <= 1
rows = list(csv.DictReader(open("a.csv")))
assert len(rows) == len(c) and rows[0]["rank"] == "1" and rows[0]["megatron_args"] == c[0]["megatron_args"]
open("best.txt", "w").write(c[0]["megatron_args"] + "\n" + repr(c[0]["iteration_time_s"]) + "\n")
PY
# The winner's pasted flags simulate to the time the plan reports for it.
read -r -a best < <(head -1 best.txt)
"$tandem" simulate --cluster dgx-h100 --gpus 16 --json sim.json -- "${flags[@]}" "${best[@]}" >/dev/null
"$python" -c 'import json; a=json.load(open("sim.json"))["iteration_time_s"]; b=float(open("best.txt").read().split("\n")[1]); assert abs(a/b-1) < 1e-9, (a, b)'
# A pinned field stays pinned.
"$tandem" plan --cluster dgx-h100 --gpus 16 --top 0 --json p.json -- "${flags[@]}" --tensor-model-parallel-size 2 >/dev/null
"$python" -c 'import json; d=json.load(open("p.json")); assert {x["tensor_model_parallel_size"] for x in d["candidates"]} == {2}'
echo "plan: ok"
