#!/usr/bin/env bash
# comm_cores (parallel/comm.c), which decides whether a checkpoint's checksum thread has a core of
# its own: a rank bound to one CPU counts 1; unbound ranks share the CPUs they may run on (those
# mpirun inherits: nproc), whether that is the whole machine or a subset (a job's cpuset, taskset);
# at least 1. Real mpirun, 1–3 ranks, with and without binding.
set -euo pipefail
engram=$1; mpirun=$3
bin=$(dirname "$engram")/tests/mpi_comm_cores
online=$(getconf _NPROCESSORS_ONLN); mine=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc obeys OMP_NUM_THREADS
check() {   # P want binding...
  local P=$1 want=$2; shift 2
  out=$("$mpirun" -np "$P" "$@" "$bin")
  n=$(grep -c "node_size $P cores $want\$" <<<"$out" || true)
  [[ $n -eq $P ]] || { echo "FAIL: -np $P $*: expected node_size $P cores $want on every rank (online $online, nproc $mine)"; echo "$out"; exit 1; }
}
shared() { local c=$((mine / $1)); echo $(( c > 0 ? c : 1 )); }   # unbound: every rank may run on all of nproc's CPUs
check 1 "$(shared 1)" --bind-to none
check 2 "$(shared 2)" --bind-to none
check 3 "$(shared 3)" --bind-to none
if (( mine >= 2 )); then check 1 1 --bind-to hwthread; check 2 1 --bind-to hwthread; fi
echo "comm_cores: ok (online $online, nproc $mine)"
