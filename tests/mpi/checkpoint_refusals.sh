#!/usr/bin/env bash
# A checkpoint that cannot be loaded is refused with one line naming the file and the problem and a
# non-zero exit, and nothing on disk changes: truncated, a flipped bit inside a table (checksum), a
# dataset without its checksum attribute,
# an HDF5 file that is not a checkpoint, a text file, a newer format version, a config whose shapes
# (a table with other rows, another width) or hashing (another engram.seed) differ, a directory
# without `latest`. A save that fails leaves the previous checkpoint and `latest` as they were.
set -euo pipefail
engram=$1; mpirun=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$(dirname "$engram")/tests/mpi_ckpt_train
cfg=$here/configs/dist.yaml
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$mpirun" -np 2 "$bin" run "$cfg" "$tmp/a" --from 0 --to 2 --save "$tmp/ck"
good=$tmp/ck/step_00000002.h5
fails=0
# refused FILE PATTERN [P] [overrides...]: exit 2, every line the same one line, naming FILE and PATTERN
refused() {
  local file=$1 pat=$2 P=$3; shift 3
  local rc=0
  if [[ $P == 1 ]]; then "$bin" load "$cfg" "$file" "$@" > "$tmp/out" 2> "$tmp/err" || rc=$?
  else "$mpirun" -np "$P" "$bin" load "$cfg" "$file" "$@" > "$tmp/out" 2> "$tmp/err" || rc=$?; fi
  local lines; lines=$(grep '^engram: ' "$tmp/err" | sort -u || true)   # the rest is mpirun's own report
  if [[ $rc -eq 0 || $(wc -l <<< "$lines") -ne 1 || $lines != *"$file"* || $lines != *"$pat"* ]]; then
    echo "FAIL: $file $*: exit $rc, expected one line naming it and '$pat':"; cat "$tmp/err"; fails=$((fails + 1))
  else
    echo "refused ($pat): $lines"
  fi
}
sum_before=$(cd "$tmp/ck" && md5sum *)
head -c $(( $(stat -c %s "$good") / 2 )) "$good" > "$tmp/truncated.h5"
refused "$tmp/truncated.h5" "truncated" 1
cp "$good" "$tmp/flipped.h5"; "$bin" corrupt "$tmp/flipped.h5" /engram/layer_2/table
refused "$tmp/flipped.h5" "checksum" 2
# a replicated tensor of 64 KiB and more is checksummed in parts (each rank its block of rows, the
# parts summed over ranks): a flipped bit is found in the first block, in the last, at P = 2 and 3
big=(model.vocab_size=700 engram.compressed_vocab_size=700)   # /params/wte: [700, 32] floats, 89.6 KB
"$mpirun" -np 2 "$bin" run "$cfg" "$tmp/big" --from 0 --to 1 --save "$tmp/big_ck" "${big[@]}"
for at in 0.05 0.97; do
  cp "$tmp/big_ck/step_00000001.h5" "$tmp/wte_$at.h5"; "$bin" corrupt "$tmp/wte_$at.h5" /params/wte $at
  for P in 2 3; do refused "$tmp/wte_$at.h5" "/params/wte does not match its checksum" $P "${big[@]}"; done
done
"$mpirun" -np 3 "$bin" load "$cfg" "$tmp/big_ck" "${big[@]}"   # and the untouched file loads at P = 3
cp "$good" "$tmp/nosum.h5"   # h5py (Debian's, an independent writer) deletes the dense tensors' checksums
/usr/bin/python3 -c 'import h5py, sys; del h5py.File(sys.argv[1], "r+")["/dense/params"].attrs["checksums"]' "$tmp/nosum.h5"
refused "$tmp/nosum.h5" "/params/wte has no checksum attribute" 2
cp "$good" "$tmp/notensors.h5"   # and the list of tensors the flat datasets hold
/usr/bin/python3 -c 'import h5py, sys; del h5py.File(sys.argv[1], "r+")["/dense/m"].attrs["tensors"]' "$tmp/notensors.h5"
refused "$tmp/notensors.h5" "/dense/m has no \`tensors\` attribute" 2
"$bin" foreign "$tmp/foreign.h5"
refused "$tmp/foreign.h5" "not an engram checkpoint" 1
echo "hello" > "$tmp/text.h5"
refused "$tmp/text.h5" "not an HDF5 file" 1
cp "$good" "$tmp/newer.h5"; "$bin" set-version "$tmp/newer.h5" 99
refused "$tmp/newer.h5" "newer" 1
refused "$good" "/engram/layer_0/table has shape [240,4] but this config needs [234,4]" 2 "engram.vocab_bases=[37,61]"
refused "$good" "/params/wte has shape [61,32] but this config needs [61,48]" 1 "model.d_model=48"
refused "$good" "multipliers differs from this config" 1 "engram.seed=8"
mkdir "$tmp/empty"
refused "$tmp/empty" "no \`latest\`" 1
[[ $(cd "$tmp/ck" && md5sum *) == "$sum_before" ]] || { echo "FAIL: refused loads changed $tmp/ck"; fails=$((fails + 1)); }
# a save that cannot create its file (its .tmp name is taken by a directory) fails cleanly
mkdir "$tmp/ck/step_00000004.h5.tmp"
rc=0; "$mpirun" -np 2 "$bin" run "$cfg" "$tmp/b" --from 2 --to 4 --load "$tmp/ck" --save "$tmp/ck" 2> "$tmp/err" || rc=$?
grep -q "cannot create the checkpoint file" "$tmp/err" && [[ $rc -ne 0 ]] || { echo "FAIL: failed save: exit $rc"; cat "$tmp/err"; fails=$((fails + 1)); }
[[ $(cat "$tmp/ck/latest") == step_00000002.h5 && ! -e $tmp/ck/step_00000004.h5 ]] || { echo "FAIL: a failed save changed latest"; fails=$((fails + 1)); }
"$bin" load "$cfg" "$tmp/ck"
echo "$fails failure(s)"
[[ $fails -eq 0 ]]
