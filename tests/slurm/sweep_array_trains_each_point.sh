#!/usr/bin/env bash
# jobs/sweep_array.sbatch on a one-node Slurm cluster (cluster.bash): a sweep directory with
# config.yaml, a second config and points.txt (comments, a blank line, a point with its own config);
# `sbatch --array=0-2` trains point i in runs/<sweep>/<name> with the point's overrides and then
# sbatch's; array task 2 has no point and fails with exit 2 and a message.
# Skips (77) like every Slurm test (cluster.bash).
engram=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$(dirname "$0")/cluster.bash"

cluster_start
test_data
sweep=$tmp/sweeps/rho
mkdir -p "$sweep"
cp "$tmp/c.yaml" "$sweep/config.yaml"
sed -e 's/d_ff: 64/d_ff: 96/' "$tmp/c.yaml" > "$sweep/wide.yaml"
cat > "$sweep/points.txt" <<'EOF'
# name [config] key=value ...
narrow train.lr=1.0e-3

wide wide.yaml train.lr=2.0e-3
EOF
cluster_wait_idle

# From $tmp, so that the default run.dir (runs/<sweep name>) lands there.
arr=$(cd "$tmp" && sbatch --parsable --array=0-2 -n 1 -c 1 --output="$tmp/sweep_%a.out" \
        "$root/jobs/sweep_array.sbatch" sweeps/rho train.steps=3 checkpoint.every=1000) || { echo "FAIL: sbatch"; exit 1; }
cluster_jobs_+=("$arr")
for i in 0 1 2; do poll 60 job_ended "${arr}_$i" || fail "array task $i did not end"; done
echo "array ended after $(elapsed)"

for i in 0 1; do [[ $(job_state "${arr}_$i") == COMPLETED ]] || { cat "$tmp/sweep_$i.out"; fail "task $i: $(job_state "${arr}_$i")"; }; done
runs=$tmp/runs/rho
for p in narrow wide; do
  [ -e "$runs/$p/checkpoints/step_00000003.h5" ] || fail "point $p has no step-3 checkpoint"
done
cfg() { "$engram" config "$runs/$1/config.yaml" | grep -E "^ *$2:" | head -1 | sed 's/.*: *//'; }
[[ $(cfg narrow lr) == 0.001 ]] || fail "narrow: train.lr $(cfg narrow lr), wanted 0.001"
[[ $(cfg wide lr) == 0.002 ]] || fail "wide: train.lr $(cfg wide lr), wanted 0.002"
[[ $(cfg narrow d_ff) == 64 && $(cfg wide d_ff) == 96 ]] || fail "the point configs were not used (d_ff $(cfg narrow d_ff), $(cfg wide d_ff))"
[[ $(cfg narrow steps) == 3 ]] || fail "sbatch's overrides were not applied (steps $(cfg narrow steps))"
[[ $(job_state "${arr}_2") == FAILED ]] || fail "task 2 (no such point): $(job_state "${arr}_2"), wanted FAILED"
grep -q "has no point 2" "$tmp/sweep_2.out" || { cat "$tmp/sweep_2.out"; fail "task 2 did not say why"; }
[ $fails -eq 0 ] || exit 1
echo "sweep array on Slurm: all checks passed in $(elapsed)"
