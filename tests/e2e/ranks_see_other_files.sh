#!/usr/bin/env bash
# Ranks that read different files (node-local disks on a cluster) are refused together, not left to
# hang or to train on in disagreement. Each rank runs in its own directory (mpirun -wdir per app
# context), and the config names its data and tokenizer by relative paths, so a rank sees what its
# directory holds. Where one rank lacks the token shards or the tokenizer, or holds other ones, or
# was given another config, every rank exits 2 and one line names that rank and the problem; no run
# directory is made. Each run is under a timeout, so a hang is a failure. Same files everywhere:
# the run trains.
set -uo pipefail
engram=$1; mpirun=$3
source "$(dirname "$0")/lib/gpt2_fortunes.sh" A/tok   # $tmp, $tok, $texts, fail
texts=$(head -3 <<< "$texts")

# node A: tokenizer and shards; the config names them relative to the working directory
"$engram" tokenize --tokenizer "$tok" --out "$tmp/A/data" --val-fraction 0.2 --val-block 512 $texts \
  >/dev/null || { echo "FAIL: tokenize"; exit 1; }
sed -e "s#RUNDIR#$tmp/runs#g" -e "s#DATADIR#data#g" -e "s#TOKENIZER#tok/encoder.json#g" \
  "$(dirname "$0")/configs/train_small.yaml" > "$tmp/c.yaml"
node_b() { rm -rf "$tmp/B"; cp -r "$tmp/A" "$tmp/B"; }   # node B starts as a copy of A

# refused PATTERN CMD...: run CMD (an mpirun line), expect exit 2 within the timeout, one line
# naming PATTERN, and no run directory
refused() {
  local pat=$1; shift
  rm -rf "$tmp/runs"
  local rc=0
  timeout 120 "$@" > "$tmp/out" 2>&1 || rc=$?
  local lines; lines=$(grep '^engram: ' "$tmp/out" | sort -u || true)   # the rest is mpirun's own report
  if [[ $rc -ne 2 || $(wc -l <<< "$lines") -ne 1 || $lines != *"$pat"* ]]; then
    fail "expected exit 2 and one line with '$pat', got exit $rc (124: hung):"; head -5 "$tmp/out"
  elif [ -e "$tmp/runs" ]; then
    fail "'$pat': the refused run made a run directory"
  else
    echo "refused: $lines"
  fi
}
# train2 NA NB [keys for B...]: into train, the mpirun line of two app contexts, ranks [0, NA) in A
# and the next NB in B, the latter given the extra keys
train2() {
  local na=$1 nb=$2; shift 2
  train=("$mpirun" -np "$na" -wdir "$tmp/A" "$engram" train "$tmp/c.yaml" train.steps=1 :
         -np "$nb" -wdir "$tmp/B" "$engram" train "$tmp/c.yaml" train.steps=1 "$@")
}

node_b; rm -rf "$tmp/B/data"
train2 1 1; refused "rank 1: data.train: data/train_*.bin: no token shards match" "${train[@]}"
train2 2 1; refused "rank 2: data.train: data/train_*.bin: no token shards match" "${train[@]}"

node_b; rm "$tmp/B/data/val_"*.bin
train2 1 1; refused "rank 1: data.val: data/val_*.bin: no token shards match" "${train[@]}"

node_b; rm -rf "$tmp/B/data"; "$engram" tokenize --tokenizer "$tmp/A/tok/encoder.json" --out "$tmp/B/data" --val-fraction 0.2 --val-block 512 \
  $(ls /usr/share/games/fortunes/* | grep -v '\.' | head -2) >/dev/null 2>&1
train2 1 1; refused "rank 1: data.train differs from rank 0's" "${train[@]}"

node_b; rm "$tmp/B/tok/encoder.json"
train2 1 1; refused "rank 1: $tmp/c.yaml: data.tokenizer: tok/encoder.json" "${train[@]}"

node_b; echo >> "$tmp/B/tok/encoder.json"   # still a valid tokenizer file, but not the same one
train2 1 1; refused "rank 1: data.tokenizer tok/encoder.json differs from rank 0's" "${train[@]}"
train2 2 2; refused "rank 2: data.tokenizer tok/encoder.json differs from rank 0's" "${train[@]}"

node_b
train2 1 1 train.lr=0.001; refused "rank 1: $tmp/c.yaml: the config with the command line's keys differs from rank 0's" "${train[@]}"

# the same files on both nodes: trains, and eval of its checkpoint refuses a rank without the data
rm -rf "$tmp/runs"
train2 1 1; rc=0
timeout 300 "${train[@]}" > "$tmp/out" 2>&1 || rc=$?
[ $rc -eq 0 ] || { tail -5 "$tmp/out"; fail "same files on both nodes: exit $rc"; }
ck=$tmp/runs/e2e/checkpoints
[ -e "$ck/step_00000001.h5" ] || fail "same files on both nodes: no checkpoint"
rm -rf "$tmp/B/data"
rc=0
timeout 120 "$mpirun" -np 1 -wdir "$tmp/A" "$engram" eval "$ck" --data 'data/val_*.bin' : \
  -np 1 -wdir "$tmp/B" "$engram" eval "$ck" --data 'data/val_*.bin' > "$tmp/out" 2>&1 || rc=$?
line=$(grep '^engram: ' "$tmp/out" | sort -u)
[[ $rc -eq 2 && $line == *"rank 1: data/val_*.bin: no token shards match"* ]] ||
  { fail "eval with a rank lacking the data: exit $rc (124: hung)"; head -5 "$tmp/out"; }

[[ $fails -eq 0 ]] && echo "ranks that see other files: all refused together"
exit $((fails > 0))
