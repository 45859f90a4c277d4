#!/usr/bin/env bash
# quickstart.sh — the default job on a fresh Debian machine (as root): install what is needed,
# build, tokenize the King James Bible with GPT-2's tokenizer, train configs/tiny.yaml on 2 ranks
# (MoE + Engram, 300 steps), then print the validation loss and `engram inspect` of the final
# checkpoint. About 10 minutes on 2 cores. Run it again and it resumes (or finds the run done).
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobs/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
bash jobs/prepare_kjv.sh
echo
echo "== training configs/tiny.yaml on 2 ranks (run directory runs/tiny)"
bash jobs/launch.sh -np 2 train configs/tiny.yaml "$@"
echo
echo "== validation loss of the final checkpoint"
bash jobs/launch.sh -np 2 eval runs/tiny/checkpoints
echo
echo "== engram inspect runs/tiny/checkpoints"
./build/engram inspect runs/tiny/checkpoints
