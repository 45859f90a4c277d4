#!/usr/bin/env bash
# `engram sweep run SWEEP --slurm` on a one-node Slurm cluster (cluster.bash): it writes the sweep
# directory (config.yaml, points.txt) and submits jobs/sweep_array.sbatch as a job array; every
# point trains in <run.dir>/<run.name>/<point>/, and `engram sweep report` reads them.
# Skips (77) like every Slurm test (cluster.bash).
engram=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/cluster.bash"

cluster_start
test_data
sed -e "s#RUNDIR#$tmp/runs#g" -e "s#DATADIR#$tmp/data#g" -e "s#TOKENIZER#$tok#g" \
  "$root/tests/e2e/configs/sweep_small.yaml" > "$tmp/s.yaml"
cluster_wait_idle
out=$("$engram" sweep run "$tmp/s.yaml" train.steps=3 --slurm --sbatch "--parsable -n 1 -c 1 --output=$tmp/pt_%a.out" 2>&1) \
  || { echo "$out"; echo "FAIL: sweep run --slurm"; exit 1; }
arr=$(echo "$out" | tail -1 | grep -o '^[0-9]*')
[[ -n "$arr" ]] || { echo "$out"; echo "FAIL: no job id from sbatch"; exit 1; }
cluster_jobs_+=("$arr")
sweep=$tmp/runs/sweep-e2e
[ -s "$sweep/points.txt" ] && [ -s "$sweep/config.yaml" ] || fail "sweep directory lacks points.txt or config.yaml"
[ "$(grep -c . "$sweep/points.txt")" -eq 2 ] || fail "points.txt: expected 2 points"
for i in 0 1; do poll 90 job_ended "${arr}_$i" || fail "array task $i did not end"; done
echo "array ended after $(elapsed)"
for i in 0 1; do [[ $(job_state "${arr}_$i") == COMPLETED ]] || { cat "$tmp/pt_$i.out"; fail "task $i: $(job_state "${arr}_$i")"; }; done
for p in rho_1 rho_0.5; do
  poll 30 test -e "$sweep/$p/checkpoints/step_00000003.h5" \
    || { fail "point $p did not finish"; ls -R "$sweep" | head -20; for i in 0 1; do echo "--- task $i"; cat "$tmp/pt_$i.out"; done; }
done
"$engram" sweep report "$sweep" --json > "$tmp/report.json" || fail "sweep report"
python3 -c "import json,sys; p=json.load(open('$tmp/report.json'))['points']; sys.exit(not (len(p)==2 and all(x['steps']==3 for x in p)))" \
  || fail "report: expected two points at step 3"
[ $fails -eq 0 ] || exit 1
echo "sweep run --slurm: all checks passed in $(elapsed)"
