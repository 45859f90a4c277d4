#!/usr/bin/env bash
# test.sh — install what is needed, build, and run the test suite (what CI runs).
#   bash jobs/test.sh                 everything
#   bash jobs/test.sh -L unit         a subset by label (unit, mpi, reference, e2e, slurm); any ctest args
#   bash jobs/test.sh --sanitize ...  build with ASan + UBSan into build-asan/ and run there
# Where nvcc is found (PATH or /usr/local/cuda/bin) and not under --sanitize, it also compiles the
# CUDA backend in build-cuda/ (its library, the gpu tests' programs and engram only) and runs the tests
# labelled gpu there: without a GPU they skip, saying why (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [[ "${1:-}" == "--sanitize" ]]; then
  shift
  build=build-asan
  flags+=(-DENGRAM_SANITIZE=ON)
  # MPI keeps its own allocations until exit; these suppressions name only MPI's libraries
  export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0
  export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1
fi
bash jobs/setup.sh
cmake -S . -B "$build" "${flags[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)"
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [[ $build == build && -x $nvcc ]]; then
  t0=$SECONDS
  cmake -S . -B build-cuda "${flags[@]}" -DENGRAM_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  cmake --build build-cuda -j2 --target engram_cuda gpu_backend_matches_cpu mpi_ckpt_train engram
  (cd build-cuda && ctest --output-on-failure -L gpu)
  echo "CUDA backend: configured, built and gpu tests run in $((SECONDS - t0)) s"
fi
cd "$build"
ctest --output-on-failure -j2 "$@"
