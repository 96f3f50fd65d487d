#!/usr/bin/env bash
# Benchmark of `tandem fit`: wall time and peak memory (GNU time's maximum resident set size, the
# largest of tandem and the simulation processes it waits for) of a fit of a published set.
# usage: experiments/fit_bench.sh [TANDEM] [SET.json] [-- extra fit options]
#   default: build/tandem, experiments/reproduce/megatron-h100.json, stack mcore-0.8-h100
# The fitted stack goes to a temporary file; nothing in the repository changes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tandem=${1:-$root/build/tandem}
set_file=${2:-$root/experiments/reproduce/megatron-h100.json}
shift $(( $# >= 2 ? 2 : $# ))
[[ "${1:-}" == "--" ]] && shift
[[ -x /usr/bin/time ]] || { echo "fit_bench.sh: needs GNU time (/usr/bin/time, Debian package 'time')" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/time -v -o "$work/time.txt" "$tandem" fit "$set_file" --out "$work/stack.json" "$@" >"$work/fit.txt"
tail -n 12 "$work/fit.txt"
wall=$(grep 'Elapsed (wall clock)' "$work/time.txt" | awk '{print $NF}')
rss=$(grep 'Maximum resident set size' "$work/time.txt" | awk '{print $NF}')
cpu=$(grep -E 'User time|System time' "$work/time.txt" | awk '{s += $NF} END {printf "%.1f", s}')
echo "fit benchmark: $(basename "$set_file"): wall $wall, CPU ${cpu} s, peak memory $((rss / 1024)) MiB ($(nproc) cores)"
