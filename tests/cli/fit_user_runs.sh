#!/usr/bin/env bash
# A user's own runs: `tandem fit` on four rows of one source (DGX Cloud benchmarking recipes v25.02,
# Llama 3.1 8B on 8 and 16 H100, BF16 and FP8; fixtures/dgxc-llama31-8b-train.csv; free: the tensor-core
# clock factor and the FP8 GEMM fraction) makes a stack
# with which the same source's other rows (32 to 128 GPUs, fixtures/dgxc-llama31-8b-heldout.json)
# are predicted better than with the default H100 stack. Prints both errors per row.
# usage: fit_user_runs.sh TANDEM PYTHON3
set -euo pipefail
tandem=$1 python=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tandem" fit "$here/fixtures/dgxc-llama31-8b-train.csv" --stack mcore-0.8-h100 \
    --free tensor_clock_factor,gemm.fraction_fp8 --name dgxc-v25.02-user --out "$work/user-stack.json" --folds 2
# A bad run file writes nothing.
if "$tandem" fit "$here/fixtures/fit_negative_time.csv" --out "$work/never.json" 2>/dev/null; then exit 1; fi
test ! -e "$work/never.json"
# simulate loads the fitted stack, names it and says which fitted parameters its figures depend on.
"$tandem" simulate --stack "$work/user-stack.json" --cluster dgx-h100 --gpus 8 -- --num-layers 2 --hidden-size 1024 \
    --num-attention-heads 8 --seq-length 1024 --max-position-embeddings 1024 --bf16 >"$work/simulate.txt"
grep -q "software stack *dgxc-v25.02-user" "$work/simulate.txt"
grep "figures depend on fitted tensor_clock_factor" "$work/simulate.txt"
"$tandem" reproduce "$here/fixtures/dgxc-llama31-8b-heldout.json" --json "$work/default.json"
"$tandem" reproduce "$here/fixtures/dgxc-llama31-8b-heldout.json" --stack "$work/user-stack.json" --json "$work/fitted.json"
"$python" - "$work/default.json" "$work/fitted.json" <<'PY'
import json, sys
default, fitted = (json.load(open(p))[0] for p in sys.argv[1:3])
print(f"{'held-out run':28} {'measured s':>10} {'default stack':>14} {'fitted stack':>13}")
for d, f in zip(default["rows"], fitted["rows"]):
    print(f"{d['label']:28} {d['published']:10.2f} {100 * d['relative_error']:+13.1f}% {100 * f['relative_error']:+12.1f}%")
md, mf = default["mean_absolute_error"], fitted["mean_absolute_error"]
print(f"mean absolute error on held-out rows: default stack {100 * md:.1f}%, fitted stack {100 * mf:.1f}%")
sys.exit(0 if mf < md else 1)
PY
