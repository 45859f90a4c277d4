#!/usr/bin/env bash
# `engram train ... parallel.device=cuda` refuses with one line and exit 2 wherever it cannot train:
# in a build without the CUDA backend ("configure with -DENGRAM_CUDA=ON"); in a CUDA build on a
# machine without a usable GPU (the line names the CUDA error, e.g. cudaErrorInsufficientDriver).
# Also at P = 2: every rank refuses, one line is printed. Nothing is written. In a CUDA build on a
# GPU machine the device is accepted, and this config, which has no data, stops at the data.train line.
set -uo pipefail
engram=$1; mpirun=$3
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'run: {name: cuda-refused, dir: %s/runs}\n' "$tmp" > "$tmp/c.yaml"
if ! "$engram" --version | grep -q 'backends: cpu cuda'; then
  want="engram: this build has no CUDA backend: configure with -DENGRAM_CUDA=ON"
elif nvidia-smi -L >/dev/null 2>&1; then
  gpu=1
  want="engram: "
else
  want="engram: parallel.device=cuda: no usable GPU: cudaGetDeviceCount failed with cudaError"
fi
fails=0
for P in 1 2; do
  "$mpirun" -np "$P" "$engram" train "$tmp/c.yaml" parallel.device=cuda >/dev/null 2>"$tmp/err"; rc=$?
  out=$(grep '^engram' "$tmp/err")   # mpirun's own notice about the exit status is not ours
  if [[ ${gpu:-0} == 1 ]]; then   # the device accepted, then the refusal of a config without data
    [[ $rc -ne 0 && $(printf '%s\n' "$out" | wc -l) -eq 1 && "$out" == *"data.train: needed to train"* ]] ||
      { echo "FAIL: P=$P: rc=$rc, stderr: $(cat "$tmp/err") (wanted one line: data.train's)"; fails=$((fails+1)); }
    continue
  fi
  lines=$(printf '%s\n' "$out" | wc -l)
  if [[ $rc -ne 2 || "$out" != "$want"* || $lines -ne 1 ]]; then
    echo "FAIL: P=$P: rc=$rc, stderr: $(cat "$tmp/err") (wanted rc 2 and one line starting: $want)"; fails=$((fails+1))
  fi
done
[[ ${gpu:-0} == 1 || ! -e "$tmp/runs" ]] || { echo "FAIL: a refused run wrote $tmp/runs"; fails=$((fails+1)); }
[[ $fails -eq 0 ]] && echo "parallel.device=cuda refused as expected: $want"
exit $((fails > 0))
