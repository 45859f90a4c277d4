#!/usr/bin/env bash
# Checkpoints keep the routed experts at their logical shape [E, ...] whatever
# parallel.expert_parallel was (tests/mpi/ckpt_train.c, real mpirun, the MoE + Engram config of the
# expert-parallel test):
#   - at P=4, EP=2: 20 steps straight equal 10 steps, save, load, 10 more, bit for bit (losses,
#     parameters and Adam moments, experts gathered at their logical shape);
#   - that checkpoint holds /params/…moe.w1 as [E, Fe, D], and loads at EP=4 and EP=1 (P=4) and at
#     P=3, EP=3 (experts 3, 3, 2): the 10 steps after it give losses within 1e-5 relative of the
#     uninterrupted run and tensors within 1e-5·max|ref| (moments 1e-4);
#   - with E=6, a checkpoint saved at EP=4 (the last position holds no expert and writes nothing)
#     loads at EP=1 and continues the same way; one saved at EP=1 loads at EP=4.
# Loading verifies every dataset's checksum, so an expert written twice or not at all fails here.
set -euo pipefail
engram=$1; mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$engram")/tests/mpi_ckpt_train
cfg=$here/configs/ep.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
run() { local P=$1 EP=$2; shift 2; "$mpirun" -np "$P" "$bin" run "$cfg" "$@" parallel.expert_parallel="$EP" ||
          { echo "FAIL: P=$P EP=$EP $*"; exit 1; }; }
echo "== resume at P=4, EP=2"
run 4 2 "$tmp/straight" --from 0 --to 20
run 4 2 "$tmp/first" --from 0 --to 10 --save "$tmp/ckpt"
run 4 2 "$tmp/second" --from 10 --to 20 --load "$tmp/ckpt"
cat "$tmp/first.losses" "$tmp/second.losses" > "$tmp/resumed.losses"
"$bin" losses "$tmp/straight.losses" "$tmp/resumed.losses" 0
"$bin" compare "$cfg" "$tmp/straight.state" "$tmp/second.state" 0
h5ls "$tmp/ckpt/step_00000010.h5/params/blocks.0.moe.w1" | grep -q "{8, 24, 32}" ||
  { echo "FAIL: /params/blocks.0.moe.w1 is not [8, 24, 32]"; h5ls -r "$tmp/ckpt/step_00000010.h5" | grep moe.w1; exit 1; }
echo "== the EP=2 checkpoint at other EP"
for case in "4 4" "4 1" "3 3"; do
  read -r P EP <<< "$case"
  run "$P" "$EP" "$tmp/re$P$EP" --from 10 --to 20 --load "$tmp/ckpt"
  "$bin" losses "$tmp/second.losses" "$tmp/re$P$EP.losses" 1e-5
  "$bin" compare "$cfg" "$tmp/straight.state" "$tmp/re$P$EP.state" 1e-5
done
echo "== E=6: saved at EP=4 (a position without experts) loads at EP=1, and back"
for pair in "4 1" "1 4"; do
  read -r from to <<< "$pair"
  run 4 "$from" "$tmp/s6_$from" --from 0 --to 20 moe.experts=6
  run 4 "$from" "$tmp/f6_$from" --from 0 --to 10 --save "$tmp/ck6_$from" moe.experts=6
  run 4 "$to" "$tmp/l6_$from" --from 10 --to 20 --load "$tmp/ck6_$from" moe.experts=6
  tail -c 80 "$tmp/s6_$from.losses" > "$tmp/s6_tail.losses"
  "$bin" losses "$tmp/s6_tail.losses" "$tmp/l6_$from.losses" 1e-5
  "$bin" compare "$cfg" "$tmp/s6_$from.state" "$tmp/l6_$from.state" 1e-5 moe.experts=6
done
