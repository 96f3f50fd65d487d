#!/usr/bin/env bash
# `mpirun -n 2 tandem sweep|plan`: the points and the re-ranking simulations are split over two MPI
# ranks and rank 0 writes the same CSV (and sweep JSON) as one process; the other rank writes
# nothing and prints nothing.
# usage: scale_out.sh TANDEM MPIRUN
set -euo pipefail
tandem=$1 mpirun=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpi=("$mpirun" -n 2 --oversubscribe)
cat >spec.json <<'JSON'
{"base": {"config": "gpt3-175b", "cluster": "dgx-a100",
          "megatron_args": "--num-layers 4 --global-batch-size 16 --tensor-model-parallel-size 8 --pipeline-model-parallel-size 2"},
 "axes": [{"name": "gpus", "values": [16, 32, 64]}, {"name": "--micro-batch-size", "values": [1, 2]}],
 "points": [{"gpus": 48, "--micro-batch-size": 1}]}
JSON
# One point fails validation: exit 1 on both runs, the same error row.
set +e
"$tandem" sweep spec.json --out one --jobs 1 >one.txt; rc1=$?
"${mpi[@]}" "$tandem" sweep spec.json --out two --jobs 1 >two.txt 2>two.err; rc2=$?
set -e
test "$rc1" -eq 1 && test "$rc2" -eq 1
cmp one.csv two.csv
cmp one.json two.json
test "$(grep -c ',ok,' two.csv)" -eq 6
grep -q '(7 simulated now on 2 MPI ranks, 0 kept from two.json)' two.txt
test "$(grep -c 'points (' two.txt)" -eq 1                    # one summary: rank 0's
# Resume under MPI: the missing rows only.
python3 - <<'PY'
import json
d = json.load(open("two.json")); d["rows"] = d["rows"][:3]; json.dump(d, open("three.json", "w"))
PY
set +e; "${mpi[@]}" "$tandem" sweep spec.json --out three --jobs 1 >three.txt 2>three.err; set -e
grep -q '(4 simulated now on 2 MPI ranks, 3 kept from three.json)' three.txt
cmp one.csv three.csv
# plan: the top 6 re-ranked by simulation on two ranks, the same ranking and CSV.
flags=(--num-layers 8 --hidden-size 1024 --num-attention-heads 16 --seq-length 2048 --max-position-embeddings 2048
       --vocab-size 32000 --global-batch-size 64 --bf16 --use-distributed-optimizer)
"$tandem" plan --cluster dgx-h100 --gpus 16 --top 6 --jobs 1 --csv one-plan.csv -- "${flags[@]}" >one-plan.txt
"${mpi[@]}" "$tandem" plan --cluster dgx-h100 --gpus 16 --top 6 --jobs 1 --csv two-plan.csv -- "${flags[@]}" >two-plan.txt
cmp one-plan.csv two-plan.csv
test "$(grep -c '^Best: ' two-plan.txt)" -eq 1
test "$(grep -c ',true,' two-plan.csv)" -ge 2                 # simulated rows are in the CSV
echo "scale-out: sweep and plan CSVs identical on 1 and 2 MPI ranks"
