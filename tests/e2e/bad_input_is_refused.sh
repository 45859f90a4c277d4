#!/usr/bin/env bash
# Bad input on the command line gets one clear line naming the file, key or value, and exit 2;
# nothing is written. Each case: expected message fragment, then the command.
set -uo pipefail
engram=$1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'model:\n  d_model: 64\n  n_heads: 3\n' > "$tmp/bad_dims.yaml"
printf 'model:\n  dmodel: 64\n' > "$tmp/bad_key.yaml"
printf 'engram:\n  layers: [1]\n  vocab_bases: [1009, 1013]\n  compressed_vocab_size: 1000\n  pad_id_compressed: 0\n' > "$tmp/ok.yaml"
fails=0
expect() {  # expect FRAGMENT cmd...
  local frag=$1; shift
  local out rc
  out=$("$@" 2>&1 >/dev/null); rc=$?
  if [[ $rc -ne 2 || "$out" != *"$frag"* || $(printf '%s\n' "$out" | wc -l) -ne 1 ]]; then
    echo "FAIL: '$*' gave rc=$rc, stderr: $out (wanted rc 2 and one line with: $frag)"; fails=$((fails+1))
  fi
}
expect "bad_dims.yaml:3: model.n_heads: must divide model.d_model = 64 (got 3)" "$engram" config "$tmp/bad_dims.yaml"
expect "bad_key.yaml:2: model.dmodel: unknown key; did you mean model.d_model?" "$engram" config "$tmp/bad_key.yaml"
expect "nope.yaml: cannot open config" "$engram" config "$tmp/nope.yaml"
expect "command line:1: train.stepz: unknown key; did you mean train.steps?" "$engram" config "$tmp/ok.yaml" train.stepz=3
expect "unknown command 'trian'" "$engram" trian
expect "batch rows must have equal length" "$engram" hash "$tmp/ok.yaml" "--ids=1,2;3"
expect "expected an integer" "$engram" hash "$tmp/ok.yaml" "--ids=1,x"
expect "give exactly one of --ids=LIST or --text STR" "$engram" hash "$tmp/ok.yaml"
expect "engram.compressed_vocab_size: needed with --ids" "$engram" hash "$tmp/ok.yaml" engram.compressed_vocab_size=0 --ids=1
expect "engram.layers is empty" "$engram" hash "$tmp/ok.yaml" "engram.layers=[]" --ids=1
expect "--world-size must be a positive integer" "$engram" hash "$tmp/ok.yaml" --ids=1 --world-size=0
# --out never overwrites
touch "$tmp/exists.yaml"
expect "exists.yaml exists" "$engram" config "$tmp/ok.yaml" --out "$tmp/exists.yaml"
[[ ! -s "$tmp/exists.yaml" ]] || { echo "FAIL: --out overwrote a file"; fails=$((fails+1)); }
# and the good paths work
"$engram" config "$tmp/ok.yaml" --out "$tmp/resolved.yaml" && "$engram" config "$tmp/resolved.yaml" >/dev/null \
  || { echo "FAIL: resolved config does not load back"; fails=$((fails+1)); }
"$engram" hash "$tmp/ok.yaml" --ids=-1,5,7 --world-size 2 | grep -q '@r' || { echo "FAIL: human hash output lacks owners"; fails=$((fails+1)); }
[[ $fails -eq 0 ]] && echo "bad input: all refusals as expected"
exit $((fails > 0))
