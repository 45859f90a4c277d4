#!/usr/bin/env bash
# engram sweep report with three points or more: the quadratic fit runs in gnuplot and the PNG is
# written (point directories made by hand: a resolved config and a metrics.jsonl each).
set -uo pipefail
engram=$1
command -v gnuplot >/dev/null || { echo "SKIP: gnuplot missing (bash jobs/setup.sh installs gnuplot-nox)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cfg=$(dirname "$0")/configs/sweep_small.yaml
for pt in "0 4.30" "0.5 4.10" "1 4.40"; do
  read -r rho loss <<< "$pt"
  mkdir -p "$tmp/s/rho_$rho"
  "$engram" config "$cfg" "sweep.rhos=[$rho]" > "$tmp/s/rho_$rho/config.yaml" || exit 1
  printf '{"step":4,"loss":5.0,"tokens_per_s":100.0}\n{"step":4,"val_loss":%s}\n' "$loss" > "$tmp/s/rho_$rho/metrics.jsonl"
done
err=$("$engram" sweep report "$tmp/s" 2>&1 >/dev/null) || { echo "FAIL: report exited $?: $err"; exit 1; }
[ -z "$err" ] || { echo "FAIL: report said: $err"; exit 1; }
[ -s "$tmp/s/sweep.png" ] || { echo "FAIL: no plot"; exit 1; }
grep -q "^fit " "$tmp/s/sweep.gp" || { echo "FAIL: three points but no fit in the script"; exit 1; }
grep -q "rho_0.5,0.5," "$tmp/s/sweep.csv" || { echo "FAIL: CSV rows"; cat "$tmp/s/sweep.csv"; exit 1; }
echo "sweep report: three points fitted and plotted"
