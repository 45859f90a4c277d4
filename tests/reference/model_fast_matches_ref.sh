#!/usr/bin/env bash
# model_fast_matches_ref.sh — the benchmark's vectorised PyTorch model (model_fast.py) against the
# float64 reference (model_ref.py): loss and every gradient on each tests/reference/configs/*.yaml.
# Args (as every tests/<label>/*.sh): $1 engram binary, $2 data dir (unused), $3 mpirun (unused).
# Env: ENGRAM_PYTHON (default /usr/bin/python3). Exit 77 (skipped) when that python lacks torch etc.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${ENGRAM_PYTHON:-/usr/bin/python3}
if ! "$py" -c "import torch, h5py, numpy, yaml, sympy" 2>/dev/null; then
  echo "SKIP: $py lacks torch/h5py/numpy/yaml/sympy (bash jobs/setup.sh installs them)"; exit 77
fi
OPENBLAS_NUM_THREADS=1 exec "$py" "$here/model_fast_matches_ref.py" --engram "$1"
