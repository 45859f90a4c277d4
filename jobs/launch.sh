#!/usr/bin/env bash
# launch.sh — run engram on P local ranks with mpirun and the settings one node needs:
#   bash jobs/launch.sh -np P COMMAND [args]     e.g. bash jobs/launch.sh -np 2 train configs/tiny.yaml
# Threads: cores / P per rank for OpenMP and OpenBLAS (one each when ranks ≥ cores, where more would
# only fight). As root it passes mpirun's root flags; more ranks than cores are allowed, with idle
# ranks yielding the CPU. ENGRAM_BIN overrides the binary (default build/engram).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ "${1:-}" == "-np" && -n "${2:-}" ]] || { echo "usage: bash jobs/launch.sh -np P COMMAND [args]"; exit 2; }
P=$2; shift 2
cores=$(nproc)
threads=$(( cores / P )); (( threads >= 1 )) || threads=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# Idle OpenMP threads sleep instead of spinning, so they do not steal the cores OpenBLAS's threads
# need between parallel regions (tiny.yaml, 2 threads: ~1.45x the tokens/s of the default).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
exec mpirun -np "$P" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x OMP_WAIT_POLICY "${ENGRAM_BIN:-build/engram}" "$@"
