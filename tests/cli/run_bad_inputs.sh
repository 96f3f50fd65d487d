#!/usr/bin/env bash
# Runs every case of bad_inputs.txt against the tandem binary ($1). A case passes when tandem
# exits non-zero without a signal (exit < 128) within 30 s and stderr contains both substrings.
set -uo pipefail
tandem=$1
here=$(cd "$(dirname "$0")" && pwd)
passed=0 failed=0
while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  want1=$(awk -F' ;; ' '{print $1}' <<<"$line")
  want2=$(awk -F' ;; ' '{print $2}' <<<"$line")
  args=$(awk -F' ;; ' '{print $3}' <<<"$line")
  args=${args//@FIX@/$here/fixtures/}
  read -r -a argv <<<"$args"
  err=$(timeout 30 "$tandem" "${argv[@]}" 2>&1 >/dev/null)
  rc=$?
  if ((rc == 0 || rc >= 124)); then
    echo "FAIL (exit $rc): tandem $args"; echo "  stderr: $err"; ((failed++)); continue
  fi
  if [[ "$err" != *"$want1"* || "$err" != *"$want2"* ]]; then
    echo "FAIL (message lacks '$want1' / '$want2'): tandem $args"; echo "  stderr: $err"; ((failed++)); continue
  fi
  ((passed++))
done <"$here/bad_inputs.txt"
echo "bad inputs: $passed passed, $failed failed"
((failed == 0 && passed >= 20))
