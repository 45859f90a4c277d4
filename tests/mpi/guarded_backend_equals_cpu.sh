#!/usr/bin/env bash
# Everything the model, the trainer and checkpoints touch goes through the Backend: the same runs on
# the guarded CPU backend (ENGRAM_GUARD_BACKEND=1, src/backend_guard.c: be->host = 0, its buffers
# PROT_NONE outside its own ops, so any direct read or write of device memory by host code dies with
# SIGSEGV) and on the plain CPU backend give the same losses, the same parameters, Adam moments and
# tables, and the same checkpoint, bit for bit (tests/mpi/ckpt_train.c, the MoE + Engram config of
# the expert-parallel test, real mpirun):
#   P=1; P=2 (data-parallel: the dense all-reduce, the Engram exchange); P=3 and P=4 with a table of
#   121 rows (max_ngram 2, three heads of 37, 41 and 43 rows), which divides by neither: the owners'
#   gather and sums, the rows moved with be->alltoallv and the tables' lazy Adam on backend memory,
#   over uneven blocks; P=2 with EP=2 (the expert exchange through be->alltoallv); P=4 with EP=2
#   (expert gradients summed over replicas);
#   each: 4 steps, save, then 3 steps from that checkpoint loaded (on the guarded side, its own).
# Then every op of tests/gpu/backend_matches_cpu.c, guarded against plain, at P = 1 and 2. That
# the guard does fault on a direct read is unit.test_backend_cpu's.
# One OpenMP thread on both sides: the CPU backend's output head splits its blocks over threads
# (lanes) only when its memory is host memory, which the guarded one's is not.
set -euo pipefail
mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$1")/tests/mpi_ckpt_train
cfg=$here/configs/ep.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1
run() { local guard=$1 P=$2; shift 2
        ENGRAM_GUARD_BACKEND=$guard "$mpirun" -x ENGRAM_GUARD_BACKEND -x OMP_NUM_THREADS -np "$P" "$bin" run "$cfg" "$@" ||
          { echo "FAIL: guard=$guard P=$P $*"; exit 1; }; }
odd="engram.max_ngram=2 engram.heads_per_ngram=3 engram.vocab_bases=[37]"   # a 121-row table
for case in "1 1" "2 1" "3 1 odd" "4 1 odd" "2 2" "4 2"; do
  read -r P EP table <<< "$case"
  extra=(); [[ "${table:-}" == odd ]] && read -ra extra <<< "$odd"
  echo "== P=$P EP=$EP ${table:-}"
  for g in 0 1; do
    run "$g" "$P" "$tmp/a$g" --from 0 --to 4 --save "$tmp/c$g" parallel.expert_parallel="$EP" "${extra[@]}"
    run "$g" "$P" "$tmp/b$g" --from 4 --to 7 --load "$tmp/c$g" parallel.expert_parallel="$EP" "${extra[@]}"
  done
  for part in a b; do
    "$bin" losses "$tmp/${part}0.losses" "$tmp/${part}1.losses" 0
    "$bin" compare "$cfg" "$tmp/${part}0.state" "$tmp/${part}1.state" 0 "${extra[@]}"
  done
  # the checkpoints: the same objects, equal but for the time they were written (/created)
  A=$tmp/c0/step_00000004.h5; B=$tmp/c1/step_00000004.h5
  diff <(h5ls -r "$A") <(h5ls -r "$B") || { echo "FAIL: P=$P EP=$EP checkpoints hold other objects"; exit 1; }
  bad=$( (h5diff -r "$A" "$B" || true) | awk '/^(attribute|dataset): </ {name = $0}
          /differences found/ && $1 + 0 > 0 && name !~ /<created of/ {n += $1} END {print n + 0}')
  [[ "$bad" == 0 ]] || { echo "FAIL: P=$P EP=$EP checkpoints differ:"; h5diff -r "$A" "$B" | head -40; exit 1; }
  rm -rf "$tmp"/c0 "$tmp"/c1
done
# every op of the GPU test's harness, the guarded backend against the CPU one (exact), at P = 1 and 2
for P in 1 2; do
  "$mpirun" -np "$P" "$(dirname "$1")/tests/gpu_backend_matches_cpu" --cpu-vs-guarded > "$tmp/ops" ||
    { echo "FAIL: P=$P: gpu_backend_matches_cpu --cpu-vs-guarded"; cat "$tmp/ops"; exit 1; }
  n=$(grep -c 'all ops match the CPU backend' "$tmp/ops" || true)
  [[ $n -eq $P ]] || { echo "FAIL: P=$P: $n of $P ranks matched"; cat "$tmp/ops"; exit 1; }
done
echo "ok: the guarded backend equals the CPU backend bit for bit"
