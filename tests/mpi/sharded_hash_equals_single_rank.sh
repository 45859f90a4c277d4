#!/usr/bin/env bash
# Runs tests/mpi/sharded_hash_equals_single_rank.c at P = 1, 2, 3, 4 with real mpirun.
set -euo pipefail
engram=$1; mpirun=$3
bin=$(dirname "$engram")/tests/mpi_sharded_hash_equals_single_rank
for P in 1 2 3 4; do "$mpirun" -np "$P" "$bin"; done
