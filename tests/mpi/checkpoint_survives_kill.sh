#!/usr/bin/env bash
# A checkpoint being written when the job dies is never loaded and never replaces a good one.
# tests/mpi/ckpt_train.c kill-loop saves, at 2 ranks, checkpoints whose every value is a function
# of the step, back to back; this script SIGKILLs one rank at a random moment, 6 times (and on, up
# to 20, until a kill has landed inside a save: saves are fast, most moments fall between). After each
# kill `latest` must load (at P=1 here, and at P=2 when the next victim starts) with every value
# exactly that of its step. A clean run afterwards removes the leftover .tmp files and keeps only
# checkpoint.keep = 2 checkpoints.
set -euo pipefail
engram=$1; mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$engram")/tests/mpi_ckpt_train
cfg=$here/configs/ckpt_kill.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dir=$tmp/ck
mkdir -p "$dir"
during=0 kills=0
for i in $(seq 20); do
  (( kills >= 6 && during >= 1 )) && break
  kills=$i
  rm -f "$dir"/pid.*
  "$mpirun" -np 2 "$bin" kill-loop "$cfg" "$dir" > "$tmp/log" 2>&1 &
  job=$!
  for _ in $(seq 200); do [[ -e $dir/pid.0 && -e $dir/pid.1 && -e $dir/latest ]] && break; sleep 0.05; done
  [[ -e $dir/pid.0 && -e $dir/pid.1 ]] || { echo "FAIL: the saving job did not start"; cat "$tmp/log"; exit 1; }
  grep -q FAIL "$tmp/log" && { echo "FAIL: restart $i could not load"; cat "$tmp/log"; exit 1; }
  sleep "0.$((RANDOM % 9 + 1))"
  victim=$((RANDOM % 2))
  kill -9 "$(cat "$dir/pid.$victim")"
  wait "$job" || true
  tmps=$(find "$dir" -name '*.tmp' | wc -l)
  [[ $tmps -gt 0 ]] && during=$((during + 1))
  echo "kill $i: rank $victim SIGKILLed; $(cat "$dir/latest" | tr -d '\n') is latest; $tmps unfinished .tmp file(s) left"
  "$bin" check "$cfg" "$dir" || { echo "FAIL: latest does not load after kill $i"; exit 1; }
done
echo "$during of $kills kills landed while a checkpoint was being written"
"$mpirun" -np 2 "$bin" kill-loop "$cfg" "$dir" --max-saves 1 | grep -v '^$'
left=$(find "$dir" -name '*.tmp' | wc -l)
kept=$(find "$dir" -name 'step_*.h5' | wc -l)
[[ $left -eq 0 && $kept -eq 2 ]] || { echo "FAIL: after a clean save: $left .tmp files, $kept checkpoints (keep = 2)"; ls -la "$dir"; exit 1; }
"$bin" check "$cfg" "$dir"
[[ $during -ge 1 ]] || { echo "FAIL: no kill landed inside a save; the test did not test it"; exit 1; }
