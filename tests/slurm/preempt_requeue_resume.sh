#!/usr/bin/env bash
# jobs/train.sbatch on a real one-node Slurm cluster started here on localhost (cluster.bash): a
# 2-task training job is preempted mid-run (USR1 to the batch shell, as --signal=B:USR1@N delivers
# it), its ranks checkpoint and exit 75, the job requeues itself, restarts, resumes from the
# checkpoint and finishes; its losses equal an uninterrupted mpirun of the same config, digit for
# digit, and its output file holds both starts. A job ended with scancel stays cancelled.
# Skips (77) without the Slurm packages (bash jobs/setup.sh installs them) or when not root.
# Not tested here: the time-limit timer itself (Slurm checks it about once a minute), multi-node.
engram=$1; mpirun=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/cluster.bash"

cluster_start
# data and the uninterrupted reference while the daemons come up
test_data
steps=(train.steps=40 train.log_every=1 train.eval_every=20 checkpoint.every=1000)
"$mpirun" -np 2 "$engram" train "$tmp/c.yaml" run.name=straight "${steps[@]}" > "$tmp/straight.out" 2>&1 \
  || { rc=$?; cat "$tmp/straight.out"; fail "uninterrupted run exited $rc"; }
cluster_wait_idle
echo "cluster up and reference run done after $(elapsed)"

# the job: submit, preempt mid-run, watch it requeue, resume and finish
run=$tmp/runs/slurm
out=$tmp/job.out
job=$(cd "$root" && sbatch --parsable -n 2 -c 1 --time=10 --output="$out" \
        jobs/train.sbatch "$tmp/c.yaml" run.name=slurm "${steps[@]}") || { echo "FAIL: sbatch"; exit 1; }
cluster_jobs_+=("$job")
poll 60 grep -qs "^step 15/" "$run/train.log" || { cat "$out"; echo "FAIL: job $job did not reach step 15"; exit 1; }
scancel --batch --signal=USR1 "$job" || fail "scancel --batch --signal=USR1"
echo "preempted near step 15 after $(elapsed)"
poll 60 grep -q "requeueing" "$out" || fail "the job did not requeue itself"
poll 90 job_ended "$job" || fail "job $job did not end (state $(job_state "$job"))"
echo "job ended ($(job_state "$job")) after $(elapsed)"

[[ $(job_state "$job") == COMPLETED ]] || fail "job state $(job_state "$job"), wanted COMPLETED"
scontrol show job "$job" | grep -q "Restarts=1" || fail "job was not restarted exactly once"
grep -q "stopping on signal 10 at step" "$out" || fail "the ranks did not stop on USR1"
grep -q "train exited 75" "$out" || fail "the first start did not exit 75"
grep -q "resumed from .*step_000000[0-9][0-9].h5" "$run/train.log" || fail "the second start did not resume"
grep -q "train exited 0" "$out" || fail "the second start did not finish"
[[ $(grep -c "engram job $job, restart" "$out") -eq 2 ]] || fail "the output file does not hold both starts (append)"
[ -e "$run/checkpoints/step_00000040.h5" ] || fail "no final checkpoint"
a=$(grep '"loss"' "$tmp/runs/straight/metrics.jsonl" | sed 's/"tokens_per_s.*//')
b=$(grep '"loss"' "$run/metrics.jsonl" | sed 's/"tokens_per_s.*//')
[[ $(echo "$b" | wc -l) -eq 40 ]] || fail "metrics.jsonl: $(echo "$b" | wc -l) step lines, wanted 40"
[ "$a" == "$b" ] || { fail "the preempted run's losses differ from the uninterrupted run"; diff <(echo "$a") <(echo "$b") | head; }

# scancel ends a job for good: the ranks still checkpoint, but the script must not requeue it
out2=$tmp/cancel.out
job2=$(cd "$root" && sbatch --parsable -n 2 -c 1 --output="$out2" jobs/train.sbatch "$tmp/c.yaml" run.name=cancel \
         train.steps=400 train.log_every=1) || { echo "FAIL: sbatch"; exit 1; }
cluster_jobs_+=("$job2")
poll 60 grep -qs "^step 2/" "$tmp/runs/cancel/train.log" || { cat "$out2"; echo "FAIL: job $job2 did not start"; exit 1; }
scancel "$job2"
poll 60 job_ended "$job2" || fail "cancelled job $job2 did not end"
sleep 8   # a requeued job would be running again by now (eligible after cred_expire + 1 = 6 s)
[[ $(job_state "$job2") == CANCELLED ]] || fail "cancelled job is $(job_state "$job2"), wanted CANCELLED"
grep -q "not requeueing" "$out2" || { cat "$out2"; fail "the script did not decline to requeue a cancelled job"; }
echo "cancelled job stayed cancelled after $(elapsed)"

echo "--- job output"; cat "$out"
if [ $fails -ne 0 ]; then echo "--- slurmctld log (tail)"; tail -20 "$tmp/log/slurmctld.log"; exit 1; fi
echo "preempt/requeue/resume on Slurm: all checks passed in $(elapsed)"
