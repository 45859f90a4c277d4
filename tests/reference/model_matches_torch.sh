#!/usr/bin/env bash
# The C model against the independent PyTorch reference (model_ref.py, float64) on every config
# in tests/reference/configs: logits, loss, every gradient, and 10 optimizer steps.
set -euo pipefail
engram=$1
py=${ENGRAM_PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
check=${MODEL_CHECK:-$(dirname "$engram")/tests/model_check}
if ! "$py" -c "import torch, h5py, numpy, yaml, sympy" 2>/dev/null; then
  echo "SKIP: $py lacks torch/h5py/numpy/yaml/sympy (bash jobs/setup.sh installs them)"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
for cfg in "$here"/configs/*.yaml; do
  name=$(basename "$cfg" .yaml)
  OPENBLAS_NUM_THREADS=1 "$py" "$here/model_ref.py" "$cfg" "$tmp/$name.h5" --engram "$engram" >/dev/null
  "$check" "$cfg" "$tmp/$name.h5" > "$tmp/$name.log" || { cat "$tmp/$name.log"; fails=$((fails+1)); continue; }
  tail -1 "$tmp/$name.log"
done
exit $((fails > 0))
