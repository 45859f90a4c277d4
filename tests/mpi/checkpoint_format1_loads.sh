#!/usr/bin/env bash
# Checkpoints of format_version 1 (one dataset per dense tensor; format 2 keeps them in three flat
# datasets) still load, bit for bit: tests/data/ckpt_format1 holds one written by the last format-1
# build, with that run's own dump of its state. Loaded at P = 1, 2 and 3 (its table of 168 rows is
# split unevenly at 3), the state equals the dump exactly; training 2 more steps and saving writes
# format 2, which loads back to the same state.
set -euo pipefail
mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$1")/tests/mpi_ckpt_train
cfg=$here/configs/ep.yaml
data=$2/ckpt_format1
over=(model.d_model=16 model.d_ff=24 moe.d_expert=12 model.n_heads=2 model.n_layers=2 "moe.layers=[0]" "engram.layers=[1]")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp -r "$data" "$tmp/ck1"   # loads never write, but the fixture stays untouched all the same
for P in 1 2 3; do
  "$mpirun" -np "$P" "$bin" run "$cfg" "$tmp/p$P" --from 3 --to 3 --load "$tmp/ck1" "${over[@]}" > /dev/null
  "$bin" compare "$cfg" "$data/state_after_3_steps.f32" "$tmp/p$P.state" 0 "${over[@]}" > /dev/null ||
    { echo "FAIL: P=$P: the format 1 checkpoint did not load exactly"; exit 1; }
done
"$mpirun" -np 2 "$bin" run "$cfg" "$tmp/more" --from 3 --to 5 --load "$tmp/ck1" --save "$tmp/ck2" "${over[@]}" > /dev/null
h5dump -a format_version "$tmp/ck2/step_00000005.h5" | grep -q "(0): 2" || { echo "FAIL: the new save is not format 2"; exit 1; }
"$mpirun" -np 2 "$bin" run "$cfg" "$tmp/again" --from 5 --to 5 --load "$tmp/ck2" "${over[@]}" > /dev/null
"$bin" compare "$cfg" "$tmp/more.state" "$tmp/again.state" 0 "${over[@]}" > /dev/null ||
  { echo "FAIL: format 2 written after a format 1 load does not load back exactly"; exit 1; }
echo "format 1 loads exactly at P = 1, 2, 3; training on saves format 2, which loads exactly"
