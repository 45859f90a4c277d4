#!/usr/bin/env bash
# quickstart.sh — the default job on a fresh Debian machine (as root): install, build, then run.
# Today training is not in engram yet (it lands with the [Model], [Distributed] and [Driver] work),
# so the default job stops at what exists: it validates configs/tiny.yaml and prints it resolved,
# then shows which Engram table rows a few token ids map to and which of 2 ranks owns each row.
set -euo pipefail
cd "$(dirname "$0")/.."
bash jobs/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
echo
echo "== configs/tiny.yaml, resolved"
./build/engram config configs/tiny.yaml
echo
echo "== Engram rows for compressed ids 464,3290,318,257 (GPT-2 V' = 32962), tables split over 2 ranks"
./build/engram hash configs/tiny.yaml engram.compressed_vocab_size=32962 engram.pad_id_compressed=0 \
  --ids=464,3290,318,257 --world-size 2
echo
echo "== hashing throughput"
./build/engram bench hash
echo
echo "quickstart: training a model (engram train) is not in this version yet; see README.md."
