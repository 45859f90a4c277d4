# shellcheck shell=bash
# lib_slurm.sh — sourced by jobs/train.sbatch and jobs/sweep_array.sbatch (never run on its own):
# the one copy of what a Slurm batch script needs to train engram — threads per task, environment,
# the job step with signal forwarding, and requeueing on exit 75 (docs/cluster.md).
#
# Not here: #SBATCH defaults (each script has its own), choosing the config (the scripts do).
#
# Variables read: ENGRAM_BIN (default <repo>/build/engram), ENGRAM_SRUN_FLAGS (extra srun options,
# word-split, e.g. "--overcommit"), ENGRAM_MAX_REQUEUES (default 50), HDF5_USE_FILE_LOCKING.
#
# Slurm 22.05 facts this relies on (checked on a one-node cluster):
#  - `--signal=B:USR1@N` and `scancel --batch --signal=USR1` reach only the batch shell. Bash runs a
#    trap only between commands, so the step runs in the background and the shell `wait`s for it.
#  - srun forwards USR1 to every task, but turns a TERM into SIGKILL for the tasks: so whatever
#    reaches this shell (USR1 or TERM) goes on to srun as USR1, which engram treats as TERM. When
#    Slurm itself ends the job (scancel, time limit, preemption) srun gets TERM too, and the tasks
#    may die before they checkpoint: the USR1 warning is what makes a fresh checkpoint certain.
#  - After scancel the job is no longer RUNNING; requeueing it then would undo the cancel.
#  - `scontrol requeue` on the running job sends this shell TERM at once (the log says "CANCELLED
#    ... DUE TO JOB REQUEUE") and the job becomes eligible again cred_expire + 1 s later (121 s by
#    default). So requeueing is the last thing the script does, and that TERM is expected.
#  - A requeued batch job truncates its output file unless --open-mode=append.

if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  echo "engram: this is a Slurm batch script; submit it with sbatch (or use jobs/launch.sh for mpirun)" >&2
  exit 2
fi

# Where the repository is: Slurm runs a copy of the script from its spool directory, so the script
# cannot find itself; the submit directory (or ENGRAM_ROOT) is the checkout.
ENGRAM_ROOT=${ENGRAM_ROOT:-$SLURM_SUBMIT_DIR}
ENGRAM_BIN=${ENGRAM_BIN:-$ENGRAM_ROOT/build/engram}
[[ -x "$ENGRAM_BIN" ]] || { echo "engram: $ENGRAM_BIN is not an executable; build first or set ENGRAM_BIN" >&2; exit 2; }

# One OpenMP/OpenBLAS thread per CPU the task was given: more would oversubscribe the node.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}   # idle OpenMP threads sleep (see jobs/launch.sh)
# HDF5 1.10 locks files with flock/fcntl, which NFS and Lustre often refuse ("unable to lock file,
# errno = 38"). engram never has two writers on one checkpoint file, so locking buys nothing here.
export HDF5_USE_FILE_LOCKING=${HDF5_USE_FILE_LOCKING:-FALSE}

_engram_srun_pid=
_engram_stop=0

# A preemption signal reached the batch shell: pass it to the ranks as USR1 (see above).
_engram_forward() {
  _engram_stop=1
  echo "engram job $SLURM_JOB_ID: got SIG$1, asking the ranks to checkpoint and stop ($(date -Is))"
  [[ -n "$_engram_srun_pid" ]] && kill -USR1 "$_engram_srun_pid" 2>/dev/null
}

# engram_slurm_train CONFIG [key=value ...]: train in one job step, then end the job: exit 0 when
# done, requeue on 75 (or on any failure after a stop was asked for: the last checkpoint is
# intact), otherwise exit with engram's status (2 bad input, 3 non-finite steps: requeueing would
# only repeat them).
engram_slurm_train() {
  local rc
  echo "engram job $SLURM_JOB_ID${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)}, restart" \
       "${SLURM_RESTART_COUNT:-0}, on $(hostname), $SLURM_NTASKS task(s) x $OMP_NUM_THREADS thread(s), $(date -Is)"
  echo "engram job $SLURM_JOB_ID: train $*"
  trap '_engram_forward USR1' USR1
  trap '_engram_forward TERM' TERM
  # shellcheck disable=SC2086  # ENGRAM_SRUN_FLAGS is a list of options
  srun --mpi=pmix ${ENGRAM_SRUN_FLAGS:-} "$ENGRAM_BIN" train "$@" &
  _engram_srun_pid=$!
  # wait returns early (status > 128) each time a trap runs; go on until srun itself has ended
  while :; do
    wait "$_engram_srun_pid"; rc=$?
    kill -0 "$_engram_srun_pid" 2>/dev/null || break
  done
  _engram_srun_pid=
  echo "engram job $SLURM_JOB_ID: train exited $rc ($(date -Is))"
  case $rc in
    0) exit 0 ;;
    2|3) exit "$rc" ;;
    75) engram_slurm_requeue ;;
    *) if (( _engram_stop )); then engram_slurm_requeue; fi
       exit "$rc" ;;
  esac
}

# Put this job back in the queue; it starts again from the top and engram resumes from the run
# directory's latest checkpoint. Exit 75 when Slurm will not requeue it (the user resubmits).
engram_slurm_requeue() {
  local max=${ENGRAM_MAX_REQUEUES:-50}
  if (( ${SLURM_RESTART_COUNT:-0} >= max )); then
    echo "engram job $SLURM_JOB_ID: requeued $max times already (ENGRAM_MAX_REQUEUES); not again. Resubmit to go on." >&2
    exit 75
  fi
  # Slurm itself may be ending the job (scancel, time limit, preemption): its decision stands, and
  # a preemption with PreemptMode=REQUEUE requeues the job without us.
  local state
  state=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  if [[ -n "$state" && "$state" != RUNNING ]]; then
    echo "engram job $SLURM_JOB_ID: the job is $state, so Slurm is ending it: not requeueing." \
         "Resubmit the same command to resume from the latest checkpoint." >&2
    exit 75
  fi
  trap - USR1
  trap 'exit 0' TERM   # scontrol requeue ends this shell with TERM: the expected way out
  echo "engram job $SLURM_JOB_ID: requeueing; the next start resumes from the latest checkpoint"
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    echo "engram job $SLURM_JOB_ID: scontrol requeue failed (submitted without --requeue, or JobRequeue=0?);" \
         "resubmit the same command to resume" >&2
    exit 75
  fi
  sleep 60 & wait $!   # the TERM normally arrives within milliseconds
  exit 0
}
