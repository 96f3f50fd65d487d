#!/usr/bin/env bash
# `tandem sweep`: a tiny sweep's rows (one per point, failed points as error rows), byte-identical
# reruns, resume without re-simulating, refusal of a corrupt output and of bad specs (exit 2,
# nothing written), a point beyond the cluster's size (noted, not refused), and the plot script.
# usage: sweep.sh TANDEM PYTHON3
set -euo pipefail
tandem=$1 python=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat >spec.json <<'JSON'
{"base": {"config": "gpt3-175b", "cluster": "dgx-a100",
          "megatron_args": "--num-layers 4 --global-batch-size 16 --tensor-model-parallel-size 8 --pipeline-model-parallel-size 2"},
 "axes": [{"name": "gpus", "values": [16, 32]}, {"name": "--micro-batch-size", "values": [1, 2]}],
 "points": [{"gpus": 48, "--micro-batch-size": 1}]}
JSON
# One point fails validation (16 is not divisible by DP 3): exit status 1, an error row, the rest kept.
set +e; "$tandem" sweep spec.json --out a >out.txt; rc=$?; set -e
test "$rc" -eq 1
test "$(wc -l <a.csv)" -eq 6                                   # header + 5 points
head -1 a.csv | grep -q '^gpus,--micro-batch-size,status,iteration_time_s,tokens_per_s,'
test "$(grep -c ',ok,' a.csv)" -eq 4
grep -q '^48,1,error,.*not divisible' a.csv
# The product runs the last axis fastest.
test "$(cut -d, -f1,2 a.csv | sed -n 2,5p | tr '\n' ' ')" = "16,1 16,2 32,1 32,2 "
# Deterministic: a fresh run gives the same bytes; a rerun keeps every row and simulates nothing.
set +e; "$tandem" sweep spec.json --out b --jobs 1 >/dev/null; "$tandem" sweep spec.json --out a >again.txt; set -e
cmp a.json b.json && cmp a.csv b.csv
grep -q '(0 simulated now, 5 kept from a.json)' again.txt
# Resume: a file holding only the first two rows gets the other three.
"$python" - <<'PY'
import json
d = json.load(open("a.json")); d["rows"] = d["rows"][:2]; json.dump(d, open("c.json", "w"))
PY
set +e; "$tandem" sweep spec.json --out c >resume.txt; set -e
grep -q '(3 simulated now, 2 kept from c.json)' resume.txt
cmp a.json c.json
# An output that would overwrite the spec is refused.
set +e; "$tandem" sweep spec.json --out spec 2>err.txt; rc=$?; set -e
test "$rc" -eq 2 && grep -q 'would overwrite the spec' err.txt
# A corrupt earlier output is refused and left as it was.
printf '{"axes": ["gpus"], "rows": [' >d.json
cp d.json d.before
set +e; "$tandem" sweep spec.json --out d 2>err.txt; rc=$?; set -e
test "$rc" -eq 2 && grep -q 'd.json' err.txt && cmp d.json d.before && test ! -e d.csv
# Bad specs: one line naming the field, exit 2, nothing written.
bad() {
  printf '%s' "$1" >bad.json
  set +e; "$tandem" sweep bad.json --out bad 2>err.txt; rc=$?; set -e
  test "$rc" -eq 2 || { echo "expected exit 2 for $1"; exit 1; }
  grep -q "$2" err.txt || { echo "expected '$2' in: $(cat err.txt)"; exit 1; }
  test ! -e bad.json.out && test ! -e bad.csv
}
bad '{"axes": [{"name": "gpus", "values": []}]}' 'axes\[0\].values: axis gpus needs a non-empty array'
bad '{"axes": [{"name": "nic_speed", "values": [1]}]}' 'axes\[0\].name = nic_speed'
bad '{"axes": [{"name": "gpus", "values": [8, 8]}]}' 'the same point twice'
bad '{"axes": [{"name": "gpus", "values": [0]}]}' 'gpus must be a positive integer'
bad '{"base": {"modle": "x"}, "points": [{"gpus": 8}]}' 'base = modle: unknown key'
bad '{}' 'no points'
bad '{"axes": [{"name": "cluster.datacenters", "values": [1.5]}]}' 'cluster.datacenters must be a positive integer'
bad '{"axes": [{"name": "cluster.nic_speed", "values": [1]}]}' 'cluster.nic_gbit_s'
# Cluster fields as axes: a second datacenter behind a 100 Gb/s WAN slows a DP-across job down.
cat >wan-spec.json <<'JSON'
{"base": {"config": "llama3-8b", "cluster": "dgx-h100", "gpus": 32,
          "megatron_args": "--num-layers 4 --bf16 --tensor-model-parallel-size 8 --global-batch-size 16"},
 "points": [{"cluster.datacenters": 1}, {"cluster.datacenters": 2, "cluster.wan_gbit_s": 100, "cluster.wan_latency_ms": 10}]}
JSON
"$tandem" sweep wan-spec.json --out wan >/dev/null
test "$(grep -c ',ok,' wan.csv)" -eq 2
"$python" - <<'PY'
import json
one, two = json.load(open("wan.json"))["rows"]
assert two["iteration_time_s"] > one["iteration_time_s"], (one["iteration_time_s"], two["iteration_time_s"])
PY
# The datacenter placement as an axis: cutting the pipeline (PP 2) sends fewer bytes across a
# narrow WAN than cutting the replicas, and is faster; one datacenter reports no WAN traffic.
cat >placement-spec.json <<'JSON'
{"base": {"config": "llama3-8b", "cluster": "dgx-h100", "gpus": 32,
          "megatron_args": "--num-layers 4 --bf16 --tensor-model-parallel-size 8 --pipeline-model-parallel-size 2 --global-batch-size 16"},
 "axes": [{"name": "cluster.datacenters", "values": [2]}, {"name": "cluster.wan_gbit_s", "values": [10]},
          {"name": "--dc-placement", "values": ["pp", "dp"]}],
 "points": [{"cluster.datacenters": 1, "cluster.wan_gbit_s": 10, "--dc-placement": "rank-order"}]}
JSON
"$tandem" sweep placement-spec.json --out placement >/dev/null
head -1 placement.csv | grep -q ',optimizer_s,wan_bytes,wan_exposed_s,wan_cost_s,error$'
"$python" - <<'PY'
import json
pp, dp, one = json.load(open("placement.json"))["rows"]
assert 0 < pp["wan_bytes"] < dp["wan_bytes"], (pp["wan_bytes"], dp["wan_bytes"])
assert pp["iteration_time_s"] < dp["iteration_time_s"], (pp["iteration_time_s"], dp["iteration_time_s"])
assert dp["wan_cost_s"] > 0 and one["wan_bytes"] == 0 and one["wan_cost_s"] == 0, (dp, one)
PY
# Beyond the cluster's 4,480 GPUs: simulated on the extended fabric, with a note.
"$tandem" simulate gpt3-175b --cluster dgx-a100 --gpus 8192 -- --num-layers 16 --global-batch-size 1024 \
    --pipeline-model-parallel-size 2 >big.txt
grep -q 'exceeds the 4480 GPUs of cluster dgx-a100: its fabric is extended' big.txt
# The plot script draws the sweep (when matplotlib is installed, as setup.sh does).
if "$python" -c 'import matplotlib' 2>/dev/null; then
  "$python" "$here/../../experiments/plot.py" a.csv --out fig --series=--micro-batch-size >/dev/null
  test -s fig.png && test -s fig.svg
fi
echo "sweep: ok"
