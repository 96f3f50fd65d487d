#!/usr/bin/env bash
# Installs what is missing (Debian packages), configures and builds tandem into ./build.
# Usage: ./setup.sh            (idempotent; re-runs only what is needed)
# Environment: BUILD_DIR (default build), BUILD_TYPE (default Release), JOBS (default nproc),
#              TANDEM_WITH_CUDA (ON/OFF, default ON: built when the CUDA toolkit is found).
set -euo pipefail
cd "$(dirname "$0")"

packages=(build-essential cmake pkg-config libsimgrid-dev libeigen3-dev libboost-graph-dev nlohmann-json3-dev
          libgtest-dev libgmock-dev libbenchmark-dev libopenmpi-dev openmpi-bin libcli11-dev
          libopenblas-dev python3-torch python3-matplotlib
          libicu-dev zlib1g-dev libsentencepiece-dev sentencepiece python3-sentencepiece python3-regex)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm installs the JavaScript GPT-2 encoder that the preprocessing test compares with (any Node.js will do).
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
      -DTANDEM_WITH_CUDA="${TANDEM_WITH_CUDA:-ON}" -Wno-dev >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
