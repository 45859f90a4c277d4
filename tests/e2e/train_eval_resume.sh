#!/usr/bin/env bash
# engram train / eval end to end, as a user runs them: fortunes tokenized with GPT-2's tokenizer,
# a small MoE + Engram model trained on 2 ranks (and with its experts sharded, EP=2); the run
# directory's files; resume from the latest
# checkpoint equals training straight through (same losses to the digit); eval at 1 and 3 ranks
# agrees with the run's own validation loss; bad input refused with one line and exit 2;
# non-finite steps stop the run (exit 3) with the last good checkpoint intact; SIGTERM writes a
# checkpoint and exits 75, and the rerun resumes; a second run on a directory in use is refused, and
# a requeued Slurm job waits for its earlier try's lock.
set -uo pipefail
engram=$1; mpirun=$3
source "$(dirname "$0")/lib/gpt2_fortunes.sh" tok   # $tmp, $tok (a copy we may change), $texts, fail
"$engram" tokenize --tokenizer "$tok" --out "$tmp/data" --val-fraction 0.2 --val-block 512 $texts >/dev/null || { echo "FAIL: tokenize"; exit 1; }
sed -e "s#RUNDIR#$tmp/runs#g" -e "s#DATADIR#$tmp/data#g" -e "s#TOKENIZER#$tok#g" "$(dirname "$0")/configs/train_small.yaml" > "$tmp/c.yaml"

# straight through, 6 steps on 2 ranks
"$mpirun" -np 2 "$engram" train "$tmp/c.yaml" > "$tmp/out1" 2>&1 || { cat "$tmp/out1"; fail "train exited $?"; }
run=$tmp/runs/e2e
for f in config.yaml metrics.jsonl train.log checkpoints/latest checkpoints/step_00000006.h5; do
  [ -e "$run/$f" ] || fail "run directory lacks $f"
done
[ ! -e "$run/checkpoints/step_00000003.h5" ] || [ -e "$run/checkpoints/step_00000006.h5" ] || fail "keep"
grep -q "val loss" "$tmp/out1" || fail "no validation loss printed"
[ "$(grep -c '"loss"' "$run/metrics.jsonl")" -eq 6 ] || fail "metrics.jsonl: expected 6 step lines"
[ "$(grep -c '"val_loss"' "$run/metrics.jsonl")" -eq 2 ] || fail "metrics.jsonl: expected 2 eval lines"
grep -q '"wire_bytes"' "$run/metrics.jsonl" || fail "metrics lack the exchange figures"

# 3 steps, stop, resume to 6: the same losses as straight through
sed -e "s#name: e2e#name: e2e_resume#" "$tmp/c.yaml" > "$tmp/r.yaml"
"$mpirun" -np 2 "$engram" train "$tmp/r.yaml" train.steps=3 > "$tmp/out2" 2>&1 || fail "first half exited $?"
"$mpirun" -np 2 "$engram" train "$tmp/r.yaml" > "$tmp/out3" 2>&1 || fail "resume exited $?"
grep -q "resumed from .*step_00000003.h5 at step 3" "$tmp/out3" || fail "did not resume from step 3"
a=$(grep '"loss"' "$run/metrics.jsonl" | sed 's/"tokens_per_s.*//')
b=$(grep '"loss"' "$tmp/runs/e2e_resume/metrics.jsonl" | sed 's/"tokens_per_s.*//')
[ "$a" == "$b" ] || { fail "resumed run's losses differ from the straight run"; diff <(echo "$a") <(echo "$b") | head; }

# eval at 1 and 3 ranks equals the run's last validation loss
want=$(grep '"val_loss"' "$run/metrics.jsonl" | tail -1 | sed 's/.*"val_loss":\([0-9.]*\).*/\1/')
for P in 1 3; do
  got=$("$mpirun" -np $P "$engram" eval "$run/checkpoints" --json | sed 's/.*"val_loss":\([0-9.]*\).*/\1/')
  python3 -c "import sys; a,b=float('$got'),float('$want'); sys.exit(abs(a-b) > 1e-5*abs(b))" || fail "eval at P=$P: $got, run said $want"
done

# expert parallelism from the command line: 2 ranks, experts sharded (EP=2): the same losses as the
# replicated run (1e-5), the same dispatched assignments, expert wire bytes only at EP=2; its
# checkpoint (experts whole) evaluates at 1 and 2 ranks to the run's own validation loss
"$mpirun" -np 2 "$engram" train "$tmp/c.yaml" run.name=ep parallel.expert_parallel=2 > "$tmp/out_ep" 2>&1 ||
  { tail -5 "$tmp/out_ep"; fail "EP=2 run exited $?"; }
python3 - "$run/metrics.jsonl" "$tmp/runs/ep/metrics.jsonl" <<'PY' || fail "EP=2 metrics differ from EP=1 or lack the expert figures"
import json, sys
a, b = ([json.loads(l) for l in open(p) if '"loss"' in l] for p in sys.argv[1:3])
assert len(a) == len(b) == 6, (len(a), len(b))
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x["step"], x["loss"], y["loss"])
    assert y["dispatched"] == x["dispatched"] > 0 and y["expert_wire_bytes"] > 0 == x["expert_wire_bytes"], (x, y)
PY
want=$(grep '"val_loss"' "$tmp/runs/ep/metrics.jsonl" | tail -1 | sed 's/.*"val_loss":\([0-9.]*\).*/\1/')
for P in 1 2; do
  got=$("$mpirun" -np $P "$engram" eval "$tmp/runs/ep/checkpoints" --json | sed 's/.*"val_loss":\([0-9.]*\).*/\1/')
  python3 -c "import sys; a,b=float('$got'),float('$want'); sys.exit(abs(a-b) > 1e-5*abs(b))" || fail "EP=2 checkpoint eval at P=$P: $got, run said $want"
done

# bad input: one line, exit 2, nothing overwritten
expect() {  # expect FRAGMENT cmd...
  local frag=$1; shift
  local out rc; out=$("$@" 2>&1 >/dev/null); rc=$?
  [[ $rc -eq 2 && "$out" == *"$frag"* ]] || fail "'$*' gave rc=$rc: $out (wanted exit 2 and: $frag)"
}
expect "no token shards match" "$engram" train "$tmp/c.yaml" run.name=x "data.train=$tmp/nope_*.bin"
head -c 1000 "$tmp/data/train_000000.bin" > "$tmp/trunc_000000.bin"
expect "trunc_000000.bin" "$engram" train "$tmp/c.yaml" run.name=x "data.train=$tmp/trunc_*.bin"
expect "model.vocab_size: smaller than the tokenizer" "$engram" train "$tmp/c.yaml" run.name=x model.vocab_size=1000
expect "belongs to another config: model.d_model is 32 there and 64 here" "$engram" train "$tmp/c.yaml" model.d_model=64
expect "eval: unknown option" "$engram" eval "$run/checkpoints" --bogus
# a batch smaller than the ranks: refused by every rank at once (refused by the ranks left without a
# sequence alone, it left the others waiting in a collective: timeout makes a hang a failure)
expect "train.batch_size: 2 sequences cannot be split over 3 ranks" timeout 120 "$mpirun" -np 3 "$engram" train \
  "$tmp/c.yaml" run.name=small train.batch_size=2
[ ! -e "$tmp/runs/small" ] || fail "a refused run made its directory"
expect "train.batch_size: 1 sequences cannot be split over 2 ranks" timeout 120 "$mpirun" -np 2 "$engram" bench \
  exchange "$tmp/c.yaml" train.batch_size=1
[ -e "$run/checkpoints/step_00000006.h5" ] || fail "a refusal removed a checkpoint"
cp "$tok" "$tmp/encoder.json.orig"; echo >> "$tok"   # same path, other contents
expect "use the tokenizer the run started with" "$engram" eval "$run/checkpoints"
cp "$tmp/encoder.json.orig" "$tok"

# non-finite: the run stops with exit 3 and keeps its last good checkpoint
ENGRAM_TEST_NONFINITE_FROM=3 "$mpirun" -x ENGRAM_TEST_NONFINITE_FROM -np 2 "$engram" train "$tmp/c.yaml" run.name=nan \
  train.max_bad_steps=2 checkpoint.every=1 > "$tmp/out4" 2>&1
rc=$?; [ $rc -eq 3 ] || { tail -3 "$tmp/out4"; fail "non-finite run exited $rc, wanted 3"; }
grep -q "non-finite steps in a row" "$tmp/out4" || fail "no message for non-finite steps"
grep -q "step_00000002.h5" "$tmp/runs/nan/checkpoints/latest" 2>/dev/null || fail "latest is not the last good step (2)"
"$engram" eval "$tmp/runs/nan/checkpoints" >/dev/null 2>&1 || fail "last good checkpoint does not load"

# SIGTERM: checkpoint, exit 75, resume
"$mpirun" -np 2 "$engram" train "$tmp/c.yaml" run.name=sig train.steps=400 checkpoint.every=1000 > "$tmp/out5" 2>&1 &
pid=$!
# wait for step 2 (the handler is installed by then); slow builds (sanitizers) under load take minutes
for i in $(seq 1 1500); do grep -q "step 2/" "$tmp/out5" 2>/dev/null && break; sleep 0.2; done
grep -q "step 2/" "$tmp/out5" || fail "SIGTERM run did not reach step 2 in 300 s"
# a second run on the same directory while this one runs: refused (exit 2, one line naming the
# holder), and nothing in the directory changes (this run's other train.steps would otherwise have
# moved config.yaml to config.previous.yaml)
sum=$(md5sum < "$tmp/runs/sig/config.yaml")
rc=0; "$mpirun" -np 2 "$engram" train "$tmp/c.yaml" run.name=sig train.steps=12 > "$tmp/out_lock" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "^engram: $tmp/runs/sig is in use by another engram train (pid [0-9]* on " "$tmp/out_lock" ||
  { cat "$tmp/out_lock"; fail "second run on a busy directory: exit $rc"; }
[[ $(md5sum < "$tmp/runs/sig/config.yaml") == "$sum" && ! -e "$tmp/runs/sig/config.previous.yaml" ]] ||
  fail "the refused second run changed the run directory"
pkill -TERM -P $pid   # to the ranks, as Slurm signals a job step's tasks (mpirun itself would abort them)
wait $pid; rc=$?
[ $rc -eq 75 ] || { tail -5 "$tmp/out5"; fail "SIGTERM run exited $rc, wanted 75"; }
grep -q "stopping on signal" "$tmp/out5" || fail "no message for the signal"
"$mpirun" -np 2 "$engram" train "$tmp/c.yaml" run.name=sig train.steps=12 checkpoint.every=1000 > "$tmp/out6" 2>&1 || fail "resume after SIGTERM"
grep -q "resumed from" "$tmp/out6" || fail "no resume after SIGTERM"

# a Slurm job requeued while its earlier try still holds the directory's lock (a node that has not
# released it yet) waits for it instead of being refused, then resumes; another job is refused
export SLURM_JOB_ID=e2e-77
"$mpirun" -np 2 -x SLURM_JOB_ID "$engram" train "$tmp/c.yaml" run.name=sig train.steps=400 > "$tmp/out7" 2>&1 &
pid=$!
for i in $(seq 1 1500); do grep -q "^step [0-9]*/400 " "$tmp/out7" 2>/dev/null && break; sleep 0.2; done
grep -q "^step [0-9]*/400 " "$tmp/out7" || fail "requeue: first try did not make a step in 300 s"
rc=0; SLURM_JOB_ID=e2e-78 "$mpirun" -np 2 -x SLURM_JOB_ID "$engram" train "$tmp/c.yaml" run.name=sig train.steps=20 \
  > "$tmp/out8" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "is in use by another engram train (.*, slurm job e2e-77)" "$tmp/out8" ||
  { cat "$tmp/out8"; fail "another Slurm job on a busy directory: exit $rc"; }
"$mpirun" -np 2 -x SLURM_JOB_ID "$engram" train "$tmp/c.yaml" run.name=sig train.steps=40 > "$tmp/out9" 2>&1 &
pid2=$!
for i in $(seq 1 150); do grep -q "waiting for the lock" "$tmp/out9" 2>/dev/null && break; sleep 0.2; done
grep -q "waiting for the lock of an earlier try of this job" "$tmp/out9" || fail "requeue: the second try did not wait"
pkill -TERM -P $pid; wait $pid
wait $pid2; rc=$?
[[ $rc -eq 0 ]] && grep -q "resumed from" "$tmp/out9" || { tail -5 "$tmp/out9"; fail "requeue: the second try exited $rc"; }
unset SLURM_JOB_ID

[ $fails -eq 0 ] && echo "train/eval end to end: all checks passed"
exit $((fails > 0))
