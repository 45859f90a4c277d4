#!/usr/bin/env bash
# fuzz.sh — build the libFuzzer targets (tests/fuzz/, clang, ASan + UBSan) into build-fuzz/ and run
# each for a bounded time from the seeds in tests/fuzz/seeds/<target>/ (docs/fuzzing.md):
#   bash jobs/fuzz.sh [SECONDS] [TARGET ...]     default 60 s each; targets: config tokenizer_json
#                                                gpt2_files shards (default all)
# Crashes land in build-fuzz/fuzz/<target>/crash-* (and the run stops at the first); once fixed,
# copy the input to tests/data/fuzz/<target>/ so that the unit test replaying it keeps it fixed.
# Needs clang and libclang-rt-14-dev (`bash jobs/setup.sh --fuzz` installs them); CI does not.
# Not here: the replay tests (tests/CMakeLists.txt), the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(config tokenizer_json gpt2_files shards)
command -v clang >/dev/null || { echo "fuzz: clang missing: bash jobs/setup.sh --fuzz"; exit 2; }
# OpenMP off: the readers never use it, and clang's runtime (libomp) is one more package
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGRAM_FUZZ=ON \
      -DENGRAM_OPENMP=OFF >/dev/null
build_targets=(engram); for t in "${targets[@]}"; do build_targets+=("fuzz_$t"); done
cmake --build build-fuzz -j"$(nproc)" --target "${build_targets[@]}"
export ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${targets[@]}"; do
  out=build-fuzz/fuzz/$t
  mkdir -p "$out/corpus"
  extra=()
  if [[ $t == config ]]; then   # every key name, so that mutations reach the typed values quickly
    build-fuzz/engram config --keys | grep -o '`[a-z_]*\.[a-z_0-9]*`' | tr -d '`' | sort -u | sed 's/.*/"&"/' > "$out/keys.dict"
    extra=(-dict="$out/keys.dict")
  fi
  echo "== fuzz_$t for ${secs} s"
  # -rss_limit_mb: a well-formed but huge input may legitimately allocate; 4 GB marks real blow-ups
  if ! build-fuzz/tests/fuzz_$t "$out/corpus" "tests/fuzz/seeds/$t" -max_total_time="$secs" -rss_limit_mb=4096 \
         -artifact_prefix="$out/" -print_final_stats=1 "${extra[@]}" > "$out/log" 2>&1; then
    grep -m1 -A30 -E '^==[0-9]+==ERROR|runtime error|^ERROR: libFuzzer|deadly signal' "$out/log"
    echo "fuzz: fuzz_$t found a crash: $(ls -t "$out"/crash-* "$out"/leak-* "$out"/oom-* "$out"/timeout-* 2>/dev/null | head -1) (log $out/log)"
    exit 1
  fi
  grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_runs|stat::new_units_added)' "$out/log" || tail -3 "$out/log"
done
