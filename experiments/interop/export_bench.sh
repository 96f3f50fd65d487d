#!/usr/bin/env bash
# Throughput of `tandem import --hf` and `tandem export --format hf` on a model of a few hundred MB.
#
# usage: experiments/interop/export_bench.sh [TANDEM_BIN] [-- make_hf_model.py options]
#   default model: LLaMA-family, 4 layers, hidden 1024, 16 heads / 4 KV heads, ffn 2816, vocab 32000,
#   untied = 110.6M parameters = 442.5 MB in fp32.
# Steps, each timed (wall clock) and reported in MB/s of safetensors bytes:
#   1. make_hf_model.py writes a random HF directory (independent numpy writer);
#   2. tandem import --hf writes it as a tandem checkpoint (values + zero Adam moments: 3x the bytes);
#   3. tandem export, fp32 in one file: must equal the generated model.safetensors byte for byte
#      (same tensor order, header and padding conventions);
#   4. tandem export, bf16 in shards of 100MB.
# Needs /usr/bin/python3 with numpy (Debian's python3-numpy, a dependency of python3-torch). Scratch space: about 2.5 GB under $TMPDIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tandem=${1:-$here/../../build/tandem}
[[ $# -gt 0 ]] && shift
[[ "${1:-}" == "--" ]] && shift
python=${PYTHON:-/usr/bin/python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TANDEM_DATA_DIR=${TANDEM_DATA_DIR:-$here/../..}

# timed LABEL CMD...: runs CMD under bash's `time`; prints MB/s of the model's fp32 bytes on wall
# time, and the CPU seconds (user + system) beside it (on a busy machine wall >> CPU).
timed() {
  local label=$1 wall user sys TIMEFORMAT='%R %U %S'
  shift
  { time "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }; } 2>"$work/time"
  read -r wall user sys <"$work/time"
  awk -v l="$label" -v b="$bytes" -v w="$wall" -v u="$user" -v s="$sys" \
    'BEGIN { printf "%-44s %7.1f MB in %6.2f s = %7.1f MB/s  (CPU %5.2f s user + %5.2f s system)\n", l, b / 1e6, w, b / 1e6 / w, u, s }'
}

"$python" "$here/make_hf_model.py" "$work/gen" "$@" >/dev/null
bytes=$(stat -c %s "$work/gen/model.safetensors")
echo "model: $(grep -E '"(num_hidden_layers|hidden_size|intermediate_size|vocab_size)"' "$work/gen/config.json" | tr -d ' \n')"

timed "import (safetensors fp32 -> checkpoint):" "$tandem" import --hf "$work/gen" --save "$work/ck"
timed "export (checkpoint -> fp32, one file):" "$tandem" export --load "$work/ck" --format hf --out "$work/fp32"
cmp "$work/gen/model.safetensors" "$work/fp32/model.safetensors"
echo "export fp32 == generated model.safetensors, byte for byte"
timed "export (checkpoint -> bf16, 100MB shards):" "$tandem" export --load "$work/ck" --format hf --out "$work/bf16" \
  --dtype bf16 --max-shard-size 100MB
echo "bf16 shards: $(ls "$work/bf16" | grep -c 'safetensors$'), MB/s above counted on the fp32 size"
