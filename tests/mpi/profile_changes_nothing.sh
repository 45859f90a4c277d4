#!/usr/bin/env bash
# ENGRAM_PROFILE=1 (src/backend_profile.c) only watches: the MoE + Engram config of the expert-parallel
# test trained 3 steps at P = 1 and 3 (data-parallel: the all-reduce and the Engram exchange through
# the wrapped backend) and at P = 2 with expert_parallel = 2 (the expert exchange over its group),
# with and without it, gives bit-identical losses, parameters, moments and tables; with it, rank 0
# alone prints one table that names the ops the run used.
set -euo pipefail
mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$1")/tests/mpi_ckpt_train
cfg=$here/configs/ep.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1
for case in "1 1" "3 1" "2 2"; do
  read -r P EP <<< "$case"
  "$mpirun" -np "$P" "$bin" run "$cfg" "$tmp/plain" --from 0 --to 3 parallel.expert_parallel="$EP" > /dev/null
  ENGRAM_PROFILE=1 "$mpirun" -x ENGRAM_PROFILE -np "$P" "$bin" run "$cfg" "$tmp/prof" --from 0 --to 3 \
    parallel.expert_parallel="$EP" > /dev/null 2> "$tmp/err"
  "$bin" losses "$tmp/plain.losses" "$tmp/prof.losses" 0 > /dev/null ||
    { echo "FAIL: P=$P EP=$EP: losses differ under ENGRAM_PROFILE=1"; exit 1; }
  "$bin" compare "$cfg" "$tmp/plain.state" "$tmp/prof.state" 0 parallel.expert_parallel="$EP" > /dev/null ||
    { echo "FAIL: P=$P EP=$EP: state differs under ENGRAM_PROFILE=1"; exit 1; }
  n=$(grep -c '^engram profile (cpu backend, rank 0)' "$tmp/err" || true)
  [[ $n -eq 1 ]] || { echo "FAIL: P=$P EP=$EP: $n profile tables, wanted 1"; cat "$tmp/err"; exit 1; }
  want="gemm adam head_xent rows_adam"
  [[ $P -gt 1 ]] && want+=" allreduce_sum alltoallv"
  for op in $want; do
    grep -qE "^  $op +[0-9]+ " "$tmp/err" || { echo "FAIL: P=$P EP=$EP: no line for $op"; cat "$tmp/err"; exit 1; }
  done
done
echo "ENGRAM_PROFILE=1: the same bits at P = 1, 3 and EP = 2, one table per run"
