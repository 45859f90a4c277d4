#!/usr/bin/env bash
# The multi-rank benchmarks run and report: `engram bench checkpoint`, `exchange` and `experts` on
# the small MoE + Engram config of the expert-parallel test (batch 7: no rank count divides it), at
# P = 1, 2 and 3, a few reps each, each print one JSON line on rank 0 whose figures are present,
# finite and positive, and whose ratios are what their parts give. Not speed: figures come from
# the benchmarks themselves (docs/parallel.md, docs/checkpoint.md); this keeps them working.
set -euo pipefail
engram=$1
mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
cfg=$here/configs/ep.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
py=${ENGRAM_PYTHON:-/usr/bin/python3}
export OMP_NUM_THREADS=1 ENGRAM_BENCH_REPS=3

# check NAME FILE KEY... : FILE holds exactly one JSON line whose KEYs are finite numbers > 0
check() {
  local name=$1 file=$2; shift 2
  "$py" - "$name" "$file" "$@" <<'EOF' || exit 1
import json, math, os, sys
name, path, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = [l for l in open(path) if l.strip()]
if len(lines) != 1:
    sys.exit(f"FAIL: {name}: {len(lines)} lines on stdout, wanted one JSON line")
d = json.loads(lines[0])
for k in keys:
    v = d.get(k)
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        sys.exit(f"FAIL: {name}: {k} = {v!r}, wanted a finite number > 0 ({lines[0].strip()})")
def near(a, b):
    return abs(a - b) <= 0.02 * abs(b) + 0.011   # printed rounded to 2-3 decimals
if d["bench"] == "checkpoint":
    want = "hdf5" if os.environ.get("ENGRAM_CKPT_MMAP") == "0" else ("mapped", "hdf5")
    if d.get("load_reads") not in (want if isinstance(want, tuple) else (want,)):
        sys.exit(f"FAIL: {name}: load_reads = {d.get('load_reads')!r}, wanted {want}")
    if not near(d["load_ratio"], d["load_MBps"] / d["plain_read_MBps"]):
        sys.exit(f"FAIL: {name}: load_ratio {d['load_ratio']} is not load_MBps / plain_read_MBps")
    if not near(d["save_ratio"], d["save_MBps"] / d["plain_write_MBps"]):
        sys.exit(f"FAIL: {name}: save_ratio {d['save_ratio']} is not save_MBps / plain_write_MBps")
if d["bench"] == "exchange" and d["P"] > 1:
    ex, pl, h = d["exchange_alone_s"], d["plain_alltoall_s"], 0.5e-6   # seconds printed to 1e-6
    if not (ex - h) / (pl + h) - 0.01 <= d["exchange_over_plain"] <= (ex + h) / (pl - h) + 0.01:
        sys.exit(f"FAIL: {name}: exchange_over_plain is not exchange_alone_s / plain_alltoall_s")
    for k in ("plan_s", "rows_s", "grads_s"):   # no phase's best exceeds the best whole exchange
        if d[k] > ex + 2 * h:
            sys.exit(f"FAIL: {name}: {k} {d[k]} is more than the whole exchange's {ex}")
EOF
}

for P in 1 2 3; do
  "$mpirun" -np "$P" "$engram" bench checkpoint "$cfg" --dir "$tmp" --reps 2 > "$tmp/ck.json"
  check "checkpoint P=$P" "$tmp/ck.json" bytes save_s load_s save_MBps load_MBps plain_write_MBps \
    plain_read_MBps save_ratio load_ratio save_ratio_median load_ratio_median
  if [[ $P == 2 ]]; then   # the load through HDF5, and said so
    ENGRAM_CKPT_MMAP=0 "$mpirun" -np "$P" "$engram" bench checkpoint "$cfg" --dir "$tmp" --reps 2 > "$tmp/ck.json"
    ENGRAM_CKPT_MMAP=0 check "checkpoint P=$P, not mapped" "$tmp/ck.json" load_s load_ratio
  fi
  left=$(find "$tmp" -name 'bench_checkpoint.*')
  [[ -z $left ]] || { echo "FAIL: checkpoint P=$P: left $left behind"; exit 1; }
  "$mpirun" -np "$P" "$engram" bench exchange "$cfg" --steps 2 > "$tmp/ex.json"
  keys="step_s compute_s"   # one rank: no all-reduce, nothing on the wire
  [[ $P -gt 1 ]] && keys+=" exchange_s allreduce_s exchange_alone_s plain_alltoall_s exchange_over_plain rows_s
    plain_rows_s wire_bytes_per_rank grads_s plain_grads_s wire_rows_s owners_gather_s wire_grads_s owners_sums_s
    rows_over_floor"
  check "exchange P=$P" "$tmp/ex.json" $keys
  "$mpirun" -np "$P" "$engram" bench experts "$cfg" --steps 2 parallel.expert_parallel="$P" > "$tmp/xp.json"
  check "experts P=$P EP=$P" "$tmp/xp.json" step_s
done
echo "bench checkpoint, exchange and experts report finite figures at P = 1, 2 and 3"
