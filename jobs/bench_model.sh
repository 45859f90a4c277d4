#!/usr/bin/env bash
# bench_model.sh — training throughput of engram against PyTorch on the same model, in one run.
#   bash jobs/bench_model.sh [CONFIG] [--steps N] [--warmup N]
# CONFIG defaults to configs/tiny.yaml; 5 timed steps after 1 warm-up step (about 1.5 min on 2 cores
# for tiny.yaml). Runs `engram bench train` (src/bench_train.c) and tests/reference/bench_torch.py
# (float32 PyTorch, the model of tests/reference/model_ref.py) with the same config, batch
# (train.batch_size x model.seq_len random tokens), step count and thread count, then prints:
#   # ... lines        the set-up: threads, OPENBLAS_CORETYPE, the BLAS each side uses, load
#   {"bench":"train","impl":"engram",...}    the C side's JSON line
#   {"bench":"train","impl":"pytorch",...}   the PyTorch side's JSON line
#   {"bench":"train_ratio","engram_tokens_per_s":..,"pytorch_tokens_per_s":..,"ratio":..}
# ratio = engram tokens/s ÷ PyTorch tokens/s (> 1: engram is faster).
# Threads: OMP_NUM_THREADS and OPENBLAS_NUM_THREADS, 2 each unless already set (torch takes
# OMP_NUM_THREADS for its own thread count and sets OpenBLAS's to the same).
# ENGRAM_BIN=path uses that binary; otherwise build/ is (configured if needed and) brought up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

config=configs/tiny.yaml steps=5 warmup=1
while (($#)); do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --steps=*) steps=${1#*=}; shift ;;
    --warmup) warmup=$2; shift 2 ;;
    --warmup=*) warmup=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "bench_model.sh: unknown option $1" >&2; exit 2 ;;
    *) config=$1; shift ;;
  esac
done

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Both sides run with idle OpenMP threads sleeping, as jobs/launch.sh runs engram (it helps both).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}
py=/usr/bin/python3

if [[ -n ${ENGRAM_BIN:-} ]]; then
  bin=$ENGRAM_BIN
else
  bin=build/engram
  [[ -f build/CMakeCache.txt ]] || cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  log=$(cmake --build build -j"$(nproc)" 2>&1) || { echo "$log" >&2; exit 1; }
fi

start=$SECONDS
# What BLAS each side really loads (torch: the libraries mapped into a python that imported torch).
torch_blas=$("$py" - <<'EOF'
import ctypes, re, torch
info = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
libs = sorted({l.split()[-1] for l in open("/proc/self/maps") if re.search(r"lib(open)?blas", l)})
try:
    ob = ctypes.CDLL("libopenblas.so.0")
    ob.openblas_get_corename.restype = ob.openblas_get_config.restype = ctypes.c_char_p
    core = f"; {ob.openblas_get_config().decode()}, core in use: {ob.openblas_get_corename().decode()}"
except OSError:
    core = ""
print(f"torch {torch.__version__} BLAS_INFO={info.group(1) if info else '?'}: {' '.join(libs)}{core}")
EOF
)
engram_blas=$(ldd "$bin" | awk '/blas/ {print $3}' | xargs -r readlink -f | tr '\n' ' ')
echo "# config $config, $steps steps after $warmup warm-up, OMP_NUM_THREADS=$OMP_NUM_THREADS OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS"
echo "# OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset: OpenBLAS picks the core itself>}"
echo "# BLAS engram: ${engram_blas:-none found}"
echo "# BLAS $torch_blas"
echo "# host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other jobs on the host skew timings)"

c_line=$("$bin" bench train "$config" --steps "$steps" --warmup "$warmup")
echo "$c_line"
t_line=$("$py" tests/reference/bench_torch.py "$config" --steps "$steps" --warmup "$warmup" \
           --threads "$OMP_NUM_THREADS" --engram "$bin")
echo "$t_line"
"$py" - "$c_line" "$t_line" <<'EOF'
import json, sys
c, t = (json.loads(s) for s in sys.argv[1:3])
e, p = c["tokens_per_s"], t["tokens_per_s"]
print(json.dumps({"bench": "train_ratio", "engram_tokens_per_s": e, "pytorch_tokens_per_s": p,
                  "ratio": round(e / p, 3)}, separators=(",", ":")))
EOF
echo "# bench_model.sh: $((SECONDS - start)) s"
