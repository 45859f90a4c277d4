#!/usr/bin/env bash
# Checkpoints under real mpirun (tests/mpi/ckpt_train.c), on the MoE + Engram G=2 config of the
# distributed test:
#   resume  — at P = 1 and 3: 20 steps straight equal 10 steps, save, a new process loading and 10
#             more steps, bit for bit (losses, parameters, Adam moments, tables, their moments and
#             update counts); at P = 3 once more with the file read through HDF5 and MPI-IO instead
#             of its mapping (ENGRAM_CKPT_MMAP=0), bit for bit too;
#   reshard — the P = 3 checkpoint loads at P' = 1, 2, 3, 4 and the 10 steps after it give losses
#             within 1e-5 relative of the uninterrupted P = 3 run (tensors within 1e-5·max|ref|,
#             moments 1e-4, update counts exact).
set -euo pipefail
engram=$1; mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$engram")/tests/mpi_ckpt_train
cfg=$here/configs/dist.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
run() { local P=$1; shift; "$mpirun" -np "$P" "$bin" run "$cfg" "$@" || { echo "FAIL: P=$P $*"; exit 1; }; }
for P in 1 3; do
  echo "== resume at P=$P"
  run "$P" "$tmp/straight$P" --from 0 --to 20
  run "$P" "$tmp/first$P" --from 0 --to 10 --save "$tmp/ckpt$P"
  run "$P" "$tmp/second$P" --from 10 --to 20 --load "$tmp/ckpt$P"
  cat "$tmp/first$P.losses" "$tmp/second$P.losses" > "$tmp/resumed$P.losses"
  "$bin" losses "$tmp/straight$P.losses" "$tmp/resumed$P.losses" 0
  "$bin" compare "$cfg" "$tmp/straight$P.state" "$tmp/second$P.state" 0
done
echo "== resume at P=3, the checkpoint read through HDF5 (not mapped)"
ENGRAM_CKPT_MMAP=0 run 3 "$tmp/second3h" --from 10 --to 20 --load "$tmp/ckpt3"
"$bin" losses "$tmp/second3.losses" "$tmp/second3h.losses" 0
"$bin" compare "$cfg" "$tmp/second3.state" "$tmp/second3h.state" 0
echo "== reshard: written at P=3, loaded at P'=1..4"
for P in 1 2 3 4; do
  run "$P" "$tmp/re$P" --from 10 --to 20 --load "$tmp/ckpt3/step_00000010.h5"
  "$bin" losses "$tmp/second3.losses" "$tmp/re$P.losses" 1e-5
  "$bin" compare "$cfg" "$tmp/straight3.state" "$tmp/re$P.state" 1e-5
done
