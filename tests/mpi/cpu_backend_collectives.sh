#!/usr/bin/env bash
# The CPU backend's collectives (MPI all-reduce and all-to-allv on host buffers, parallel/device.c)
# meet the values of their formula at P = 1, 2, 3, 4, with pairs that exchange nothing, over the world
# and over groups of two ranks (be->group): the GPU
# test's harness (tests/gpu/backend_matches_cpu.c) with the CPU backend on both sides.
set -euo pipefail
engram=$1; mpirun=$3
bin=$(dirname "$engram")/tests/gpu_backend_matches_cpu
for P in 1 2 3 4; do
  out=$("$mpirun" -np "$P" "$bin" --cpu-vs-cpu)
  for what in allreduce_sum alltoallv; do
    n=$(grep -c "^cpu $what (P=$P) .* ok$" <<<"$out" || true)
    [[ $n -eq $P ]] || { echo "FAIL: P=$P: $what ok on $n of $P ranks"; echo "$out"; exit 1; }
    # and over groups of two consecutive ranks (be->group: the expert exchange's), the last alone at odd P
    n=$(grep -cE "^group $what \(P=[12]\) .* ok$" <<<"$out" || true)
    [[ $n -eq $P ]] || { echo "FAIL: P=$P: group $what ok on $n of $P ranks"; echo "$out"; exit 1; }
  done
done
echo "cpu backend collectives: P = 1..4 ok"
