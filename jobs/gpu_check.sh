#!/usr/bin/env bash
# gpu_check.sh — issue [GPU]'s checks on a machine with an NVIDIA GPU, in one go (docs/gpu.md):
#   bash jobs/gpu_check.sh [OUTDIR] [STAGE ...]     stages: env build ops train bench cpu (default: all)
# Run from a checkout that carries .debs/ (bash jobs/gpu_deps.sh pack, on the Debian machine).
#   env    what the machine has: GPU, driver, nvcc, cuBLAS, NCCL, PyTorch
#   build  unpack .debs into /opt/deps, configure build-cuda (-DENGRAM_CUDA=ON, NCCL found next to
#          CUDA or in PyTorch's nvidia-nccl package) and build it
#   ops    gpu_backend_matches_cpu: every CUDA op against the CPU backend (one line per op); if it
#          crashes, once more under compute-sanitizer
#   train  ctest -L gpu: CPU vs GPU over 20 steps in fp32 and bf16, the refusals
#   bench  engram bench train and tests/reference/bench_torch.py (model_fast.py) on
#          configs/gpu-124m.yaml (GPU_BENCH_CONFIG), bf16 and fp32, on the GPU: tokens/s and MFU;
#          engram's time per op (ENGRAM_PROFILE=1) and per GEMM shape (ENGRAM_PROFILE=gemm); PyTorch with torch.compile (GPU_BENCH_COMPILE=0: not;
#          GPU_BENCH_TORCH=0: no PyTorch at all)
#   cpu    the CPU side's benchmarks with a core per rank, which a 2-core machine cannot give:
#          `bench exchange` at P = 2 and 4 (issue [Distributed]) and `bench checkpoint` at P = 1, 2
#          and 4 (issue [Checkpoints]), 3 runs each, ranks bound to cores, one BLAS thread per rank
#          (CPU_BENCH_P: the exchange's rank counts; CPU_BENCH_BIN: the binary, build-cuda/engram)
# Each stage's output goes to OUTDIR/<stage>.log (OUTDIR: $OUT, else gpu-check/); a summary to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
outdir=${1:-${OUT:-gpu-check}}; shift || true
stages=${*:-env build ops train bench cpu}
mkdir -p "$outdir"
sys_ld=${LD_LIBRARY_PATH:-}
steps=${GPU_BENCH_STEPS:-10}
py=python3   # the GPU machine's, which has CUDA PyTorch (not Debian's /usr/bin/python3)

stage() {   # stage NAME SECONDS CMD...: run with a time limit, log, print its tail
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" bash -c "$*" > "$outdir/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc, $((SECONDS - t0)) s (log: $name.log)"
  tail -n "${TAIL:-25}" "$outdir/$name.log" | cut -c1-400
  return $rc
}

nccl_dirs() {   # where nccl.h and libnccl.so* may be: next to CUDA, the system, PyTorch's wheel
  echo /usr/local/cuda /usr/local/cuda/targets/x86_64-linux /usr /usr/lib/x86_64-linux-gnu/..
  $py -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null
}

env_() {
  nvidia-smi; nvidia-smi -L
  nvcc --version | tail -n 2
  ls /usr/local/cuda/lib64/ 2>/dev/null | grep -E 'cublas|nccl|cudart' | head
  for d in $(nccl_dirs); do ls "$d"/include/nccl.h "$d"/lib*/libnccl.so* 2>/dev/null; done
  $py -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))'
  gcc --version | head -n 1; cmake --version | head -n 1; nproc; free -g | head -n 2
}

build_() {
  bash jobs/gpu_deps.sh unpack /opt/deps || return 1
  # shellcheck disable=SC1091
  source /opt/deps/env.sh
  local inc="" lib=""
  for d in $(nccl_dirs); do
    [[ -z $inc && -f $d/include/nccl.h ]] && inc=$d/include
    for l in "$d"/lib/libnccl.so "$d"/lib64/libnccl.so "$d"/lib/x86_64-linux-gnu/libnccl.so "$d"/lib/libnccl.so.2; do
      [[ -z $lib && -e $l ]] && lib=$l
    done
  done
  echo "NCCL: include $inc, library $lib"
  cmake -S . -B build-cuda -DENGRAM_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_FLAGS=-lineinfo \
        ${inc:+-DNCCL_INCLUDE_DIR=$inc} ${lib:+-DNCCL_LIBRARY=$lib} || return 1
  cmake --build build-cuda -j"$(nproc)" || return 1
  echo "export LD_LIBRARY_PATH=$(dirname "${lib:-/x/x}"):\$LD_LIBRARY_PATH" >> /opt/deps/env.sh
}

ops_() {
  ./build-cuda/tests/gpu_backend_matches_cpu; local rc=$?
  if ((rc != 0 && rc != 1)) && command -v compute-sanitizer >/dev/null; then
    echo "== crashed (rc $rc): once more under compute-sanitizer"
    timeout 120 compute-sanitizer --print-limit 5 ./build-cuda/tests/gpu_backend_matches_cpu 2>&1 | tail -n 60
  fi
  return $rc
}

train_() { (cd build-cuda && ctest -L gpu -V --timeout 300); }   # -V: every comparison's figures

bench_() {
  local bin=build-cuda/engram wrap=/tmp/engram-with-deps cfg=${GPU_BENCH_CONFIG:-configs/gpu-124m.yaml}
  printf '#!/bin/sh\n. /opt/deps/env.sh\nexec %s "$@"\n' "$PWD/$bin" > $wrap && chmod +x $wrap
  torch_() {   # GPU_BENCH_TORCH=0: engram's side only
    [[ ${GPU_BENCH_TORCH:-1} == 1 ]] || return 0
    LD_LIBRARY_PATH=$sys_ld timeout 300 $py tests/reference/bench_torch.py $cfg --engram $wrap --device cuda "$@"
  }
  for prec in bf16 fp32; do
    timeout 150 $bin bench train $cfg parallel.device=cuda train.precision=$prec --steps "$steps" --warmup 2
    torch_ --precision $prec --steps "$steps" --warmup 2
  done
  echo "== where engram's step goes (bf16; every op waited for; outside ops per step = (outside - init_s) / 4)"
  ENGRAM_PROFILE=1 timeout 150 $bin bench train $cfg parallel.device=cuda train.precision=bf16 --steps 3 --warmup 1
  echo "== engram's GEMMs by shape (bf16; each waited for)"
  ENGRAM_PROFILE=gemm timeout 150 $bin bench train $cfg parallel.device=cuda train.precision=bf16 --steps 3 --warmup 1
  [[ ${GPU_BENCH_COMPILE:-1} == 1 ]] && torch_ --precision bf16 --compile --steps "$steps" --warmup 3
  return 0
}

cpu_() {
  local bin=${CPU_BENCH_BIN:-build-cuda/engram} run="mpirun --bind-to core --report-bindings"
  nproc
  for P in ${CPU_BENCH_P:-2 4}; do
    for i in 1 2 3; do
      OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 timeout 120 $run -np "$P" "$bin" bench exchange configs/tiny.yaml 2>&1
    done
  done
  for P in 1 ${CPU_BENCH_P:-2 4}; do
    for i in 1 2 3; do
      OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 timeout 120 $run -np "$P" "$bin" bench checkpoint configs/tiny.yaml \
        train.batch_size=4 --dir "${TMPDIR:-/tmp}" 2>&1
    done
  done
}

export -f nccl_dirs env_ build_ ops_ train_ bench_ cpu_
export outdir sys_ld steps py OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
for s in $stages; do
  [[ $s != build && -f /opt/deps/env.sh ]] && source /opt/deps/env.sh
  case $s in
    env) stage env 60 env_ ;;
    build) stage build 400 build_ || { echo "gpu_check: the build failed; stopping"; exit 1; } ;;
    ops) stage ops 200 ops_ ;;
    train) stage train 400 train_ ;;
    bench) TAIL=60 stage bench 700 bench_ ;;
    cpu) TAIL=20 stage cpu 400 cpu_ ;;
    *) echo "gpu_check: unknown stage $s (env build ops train bench cpu)"; exit 2 ;;
  esac
done
