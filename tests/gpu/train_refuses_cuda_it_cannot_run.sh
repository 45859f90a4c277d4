#!/usr/bin/env bash
# `engram train ... parallel.device=cuda` refuses with one line and exit 2 wherever it cannot train:
# in a build without the CUDA backend ("configure with -DENGRAM_CUDA=ON"); in a CUDA build on a
# machine without a usable GPU (the line names the CUDA error, e.g. cudaErrorInsufficientDriver);
# and, until the model runs on the backend (docs/gpu.md), in a CUDA build on a GPU machine. Also at
# P = 2: every rank refuses, one line is printed. Nothing is written.
set -uo pipefail
engram=$1; mpirun=$3
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'run: {name: cuda-refused, dir: %s/runs}\n' "$tmp" > "$tmp/c.yaml"
if ! "$engram" --version | grep -q 'backends: cpu cuda'; then
  want="engram: this build has no CUDA backend: configure with -DENGRAM_CUDA=ON"
elif nvidia-smi -L >/dev/null 2>&1; then
  want="engram: parallel.device=cuda: the model does not run on the CUDA backend yet"
else
  want="engram: parallel.device=cuda: no usable GPU: cudaGetDeviceCount failed with cudaError"
fi
fails=0
for P in 1 2; do
  "$mpirun" -np "$P" "$engram" train "$tmp/c.yaml" parallel.device=cuda >/dev/null 2>"$tmp/err"; rc=$?
  out=$(grep '^engram' "$tmp/err")   # mpirun's own notice about the exit status is not ours
  lines=$(printf '%s\n' "$out" | wc -l)
  if [[ $rc -ne 2 || "$out" != "$want"* || $lines -ne 1 ]]; then
    echo "FAIL: P=$P: rc=$rc, stderr: $(cat "$tmp/err") (wanted rc 2 and one line starting: $want)"; fails=$((fails+1))
  fi
done
[[ ! -e "$tmp/runs" ]] || { echo "FAIL: a refused run wrote $tmp/runs"; fails=$((fails+1)); }
[[ $fails -eq 0 ]] && echo "parallel.device=cuda refused as expected: $want"
exit $((fails > 0))
