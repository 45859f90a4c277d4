#!/usr/bin/env bash
# Runs tests/mpi/exchange_edge_cases.c (the Engram exchange alone, against a reference built from
# every rank's requests) at P = 1, 2, 3, 4 with real mpirun.
set -euo pipefail
engram=$1; mpirun=$3
bin=$(dirname "$engram")/tests/mpi_exchange_edge_cases
for P in 1 2 3 4; do "$mpirun" -np "$P" "$bin"; done
