#!/usr/bin/env bash
# ARCHITECTURE.md §4 at P = 1, 2, 3, 4 with real mpirun (tests/mpi/train_dump.c): the same global
# batch (7 sequences: divides by none of 2, 3, 4) trained 20 steps gives the same loss at every
# step (1e-5 relative) and the same final parameters and Engram tables (per tensor
# max|Δ| ≤ 1e-5·max|ref|). Cases: MoE + Engram with G=2; a table whose row count is prime; a batch
# where every token repeats (heavy dedup, and owners nobody asks). Two runs at the same P are
# bit-identical, and so are runs that prefetch the next step's plan. train_dump itself asserts identical replicas after every step and the wire bytes
# against an independent recount.
# The configs train at lr 1e-4: Adam turns float summation-order noise in near-zero gradients into
# O(lr) steps, so at lr 1e-3 even one rank with its sequences in reverse order drifts ~1e-3·max|p|
# from itself in 20 steps (the floor printed below measures exactly that).
set -euo pipefail
engram=$1; mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$engram")/tests/mpi_train_dump
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
run() { local P=$1; shift; "$mpirun" -np "$P" "$bin" "$@" || { echo "FAIL: P=$P $*"; exit 1; }; }
for case in "dist random" "dist_prime random" "dist repeat" "dist_prime repeat"; do
  read -r name data <<< "$case"
  cfg=$here/configs/$name.yaml
  echo "== $name.yaml, $data data"
  for P in 1 2 3 4; do
    extra=(); [[ $name == dist_prime && $data == repeat && $P -ge 3 ]] && extra=(--expect-idle-owner)
    run "$P" "$cfg" "$tmp/$P.bin" --data "$data" "${extra[@]}"
  done
  for P in 2 3 4; do "$bin" --compare "$cfg" "$tmp/1.bin" "$tmp/$P.bin" 1e-5; done
  run 3 "$cfg" "$tmp/3b.bin" --data "$data"
  "$bin" --compare "$cfg" "$tmp/3.bin" "$tmp/3b.bin" 0
  for P in 1 3 4; do   # the next step's plan posted during this one: exactly the same numbers
    run "$P" "$cfg" "$tmp/${P}p.bin" --data "$data" --prefetch
    "$bin" --compare "$cfg" "$tmp/$P.bin" "$tmp/${P}p.bin" 0
  done
  run 1 "$cfg" "$tmp/1r.bin" --data "$data" --reverse
  echo "floor (one rank, sequences reversed): $("$bin" --compare "$cfg" "$tmp/1.bin" "$tmp/1r.bin" 1 | tail -1)"
done
