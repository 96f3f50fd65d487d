#!/usr/bin/env bash
# End-to-end `tandem calibrate --backend cpu` ($1 = the tandem binary, $2 = python3):
#  1. on a tiny job it writes a profile in the compute model's format (entries with seconds > 0);
#  2. `tandem simulate --profile` of the same job loads it and predicts another iteration time
#     than the analytical model (the times are of this CPU, not of the simulated GPU);
#  3. bad inputs (unknown backend, unwritable --out, --repeats 0, no --backend) fail with one
#     line on stderr that names the option and the value.
set -uo pipefail
tandem=$1
python=${2:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }

flags=(--num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 64 --max-position-embeddings 64
       --vocab-size 256 --micro-batch-size 2 --global-batch-size 4)

# 1. the profile
if ! "$tandem" calibrate --backend cpu --out "$work/cpu.json" --repeats 2 --min-time 0.001 --gpus 1 -- "${flags[@]}" \
     >"$work/calibrate.out" 2>"$work/calibrate.err"; then
  fail "calibrate exited non-zero"; cat "$work/calibrate.err"
fi
grep -q "GFLOP/s" "$work/calibrate.out" || fail "no timing table on stdout"
[[ -e "$work/cpu.json.tmp" ]] && fail "temporary file left behind"
"$python" - "$work/cpu.json" <<'EOF' || fail "profile content"
import json, sys
doc = json.load(open(sys.argv[1]))
assert "gpu" not in doc, "a CPU profile must load for any simulated GPU"
assert "CPU" in doc["source"] or "cpu" in doc["source"], doc["source"]
entries = doc["entries"]
kinds = {e["op"] for e in entries}
for want in ("Gemm", "GemmGradInput", "GemmGradWeight", "Attention", "AttentionGrad", "Norm"):
    assert want in kinds, f"{want} missing from {sorted(kinds)}"
for e in entries:
    assert e["seconds"] > 0, e
    assert set(e) == {"op", "m", "n", "k", "batch", "dtype", "seconds", "bytes"}, e
keys = [(e["op"], e["m"], e["n"], e["k"], e["batch"], e["dtype"]) for e in entries]
assert len(keys) == len(set(keys)), "duplicate profile keys"
EOF

# 2. the simulator with and without it
"$tandem" simulate --gpus 1 --json "$work/analytical.json" -- "${flags[@]}" >/dev/null 2>"$work/sim.err" ||
  { fail "simulate (analytical)"; cat "$work/sim.err"; }
"$tandem" simulate --gpus 1 --profile "$work/cpu.json" --json "$work/profiled.json" -- "${flags[@]}" >/dev/null \
  2>"$work/sim.err" || { fail "simulate --profile"; cat "$work/sim.err"; }
"$python" - "$work/analytical.json" "$work/profiled.json" <<'EOF' || fail "profiled iteration time"
import json, sys
a = json.load(open(sys.argv[1]))["iteration_time_s"]
p = json.load(open(sys.argv[2]))["iteration_time_s"]
print(f"iteration time: analytical {a:.6g} s, with the CPU profile {p:.6g} s")
assert a > 0 and p > 0 and abs(p - a) > 1e-3 * a, (a, p)
EOF

# 3. bad inputs: exit code 2, one line naming the option and the value
bad() {
  local want1=$1 want2=$2; shift 2
  local err rc
  err=$(timeout 60 "$tandem" calibrate "$@" --gpus 1 -- "${flags[@]}" 2>&1 >/dev/null)
  rc=$?
  ((rc != 0 && rc < 124)) || fail "exit $rc: calibrate $*"
  [[ "$err" == *"$want1"* && "$err" == *"$want2"* ]] || fail "message lacks '$want1'/'$want2': $err"
  [[ $(printf '%s\n' "$err" | wc -l) -eq 1 ]] || fail "not one line: $err"
}
bad --backend tpu --backend tpu
bad --out /nonexistent-dir/p.json --backend cpu --out /nonexistent-dir/p.json
bad --repeats 0 --backend cpu --repeats 0 --out "$work/x.json"
bad --backend missing
# Without a GPU the CUDA backend refuses in one line.
if ! nvidia-smi -L >/dev/null 2>&1; then bad "no CUDA device" "" --backend cuda --out "$work/y.json"; fi
[[ -e "$work/x.json" ]] && fail "--repeats 0 wrote a profile"

((failed == 0)) && echo "calibrate: all checks passed"
exit $failed
