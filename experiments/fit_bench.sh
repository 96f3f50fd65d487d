#!/usr/bin/env bash
# Benchmark of `tandem fit`: wall time and peak memory (GNU time's maximum resident set size, the
# largest of tandem and the simulation processes it waits for) of a fit of a published set.
# usage: experiments/fit_bench.sh [TANDEM] [SET.json] [-- extra fit options]
#   default: build/tandem and the shared H100 recipe set (the four nvidia-*-h100.json sets, 128 runs)
#   fitted as clusters/stacks/nemo-24-26-h100.json records (its fit.command)
# The fitted stack goes to a temporary file; nothing in the repository changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tandem=${1:-$root/build/tandem}
shift $(( $# >= 1 ? 1 : 0 ))
set_files=()
[[ $# -ge 1 && "$1" != "--" ]] && { set_files=("$1"); shift; }
[[ "${1:-}" == "--" ]] && shift
extra=("$@")
if [[ ${#set_files[@]} -eq 0 ]]; then
  set_files=("$root"/experiments/reproduce/nvidia-{dgxc,nemo-perf,nemo-launcher,megatron-bridge}-h100.json)
  [[ ${#extra[@]} -gt 0 ]] || extra=(--stack mcore-0.8-h100 --free
    tensor_clock_factor,gemm.fraction_fp8,attention.forward_fraction,attention.backward_fraction,launch_overhead_us)
fi
[[ -x /usr/bin/time ]] || { echo "fit_bench.sh: needs GNU time (/usr/bin/time, Debian package 'time')" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"
/usr/bin/time -v -o "$work/time.txt" "$tandem" fit "${set_files[@]}" --out "$work/stack.json" "${extra[@]}" >"$work/fit.txt"
tail -n 12 "$work/fit.txt"
wall=$(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
rss=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
cpu=$(grep -E 'User time|System time' "$work/time.txt" | awk '{s += $NF} END {printf "%.1f", s}')
echo "fit benchmark: ${#set_files[@]} set(s), $(grep -o '[0-9]* runs' "$work/fit.txt" | head -1): wall $wall, CPU ${cpu} s, peak memory $((rss / 1024)) MiB ($(nproc) cores)"
