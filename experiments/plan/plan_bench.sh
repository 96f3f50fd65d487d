#!/usr/bin/env bash
# Planner speed: the whole search space of a job checked and ranked by the analytic model (one
# process, one core), then the best K re-ranked by simulation (--jobs parallel simulations).
# Prints candidates checked per second, analytic evaluations per second (candidates that passed the
# divisibility and Megatron rules and were timed by the model), and the wall time of each phase.
# usage: experiments/plan/plan_bench.sh [TOP_K]      (default 50; 0 skips the simulations)
set -euo pipefail
cd "$(dirname "$0")/../.."
top=${1:-50}
tandem=build/tandem
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {   # NAME GPUS CLUSTER STACK FLAGS...
  local name=$1 gpus=$2 cluster=$3 stack=$4; shift 4
  local start end
  start=$(date +%s.%N)
  "$tandem" plan --cluster "$cluster" --stack "$stack" --gpus "$gpus" --top "$top" --json "$work/p.json" -- "$@" >/dev/null
  end=$(date +%s.%N)
  python3 - "$work/p.json" "$name" "$start" "$end" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
wall = float(sys.argv[4]) - float(sys.argv[3])
print("%-34s %7d cand. %7d timed %8.3f s analytic %9.0f cand./s %9.0f eval./s | %3d simulated in %6.1f s (tau %.2f) | wall %6.1f s"
      % (sys.argv[2], d["enumerated"], d["evaluated"], d["analytic_seconds"], d["candidates_per_second"],
         d["evaluations_per_second"], d["simulated"], d["simulation_seconds"], d["kendall_tau"], wall))
PY
}
run "LLaMA-3 8B, 128 H100, s=8192" 128 dgx-h100 nemo-24-26-h100 --num-layers 32 --hidden-size 4096 \
    --ffn-hidden-size 14336 --num-attention-heads 32 --group-query-attention --num-query-groups 8 --swiglu \
    --normalization RMSNorm --position-embedding-type rope --untie-embeddings-and-output-weights --disable-bias-linear \
    --vocab-size 128256 --seq-length 8192 --max-position-embeddings 8192 --global-batch-size 1024 --bf16
run "GPT 462B, 6144 H100 (Megatron-Core)" 6144 dgx-h100 mcore-0.8-h100 --num-layers 112 --hidden-size 18432 \
    --num-attention-heads 144 --seq-length 4096 --max-position-embeddings 4096 --vocab-size 131072 \
    --global-batch-size 3072 --bf16 --use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather \
    --tp-comm-overlap --attention-backend flash --untie-embeddings-and-output-weights --overlap-p2p-communication
