#!/usr/bin/env bash
# `engram hash --json` on every case of tests/data/hash_ids.json, both flavours, with the engram.*
# keys given as overrides (vectors/README.md maps the names): multipliers, table sizes, offsets,
# local and global ids must equal the golden vectors exactly. Also checks --world-size owners
# against row // ceil(rows/P) computed here.
set -euo pipefail
engram=$1; data=$2
py=${ENGRAM_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'model:\n  n_layers: 16\n' > "$tmp/base.yaml"
"$py" - "$engram" "$data/hash_ids.json" "$tmp/base.yaml" <<'PY'
import json, subprocess, sys
engram, vectors, base = sys.argv[1:4]
cases = json.load(open(vectors))["cases"]
checked = 0
for c in cases:
    for flavour, layers in c["by_flavour"].items():
        ids = ";".join(",".join(str(t) for t in row) for row in c["input_ids_compressed"])
        args = [engram, "hash", base,
                "engram.layers=[%s]" % ",".join(map(str, c["layer_ids"])),
                "engram.vocab_bases=[%s]" % ",".join(map(str, c["engram_vocab_size"])),
                "engram.max_ngram=%d" % c["max_ngram_size"],
                "engram.heads_per_ngram=%d" % c["n_head_per_ngram"],
                "engram.seed=%d" % c["seed"], "engram.flavour=" + flavour,
                "engram.compressed_vocab_size=%d" % c["tokenizer_vocab_size"],
                "engram.pad_id_compressed=%d" % c["pad_id_compressed"],
                "--ids=" + ids, "--json", "--world-size", "3"]
        out = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
        got = {str(L["layer_id"]): L for L in out["layers"]}
        for lid, want in layers.items():
            g = got[lid]
            for ours, theirs in [("multipliers", "multipliers"), ("table_sizes", "flat_sizes"), ("offsets", "offsets"),
                                 ("local_ids", "hash_ids_local"), ("global_ids", "hash_ids_global")]:
                if g[ours] != want[theirs]:
                    sys.exit("FAIL %s/%s layer %s: %s differs:\n got  %s\n want %s" % (c["name"], flavour, lid, ours, g[ours], want[theirs]))
            rows = sum(want["flat_sizes"])
            blk = -(-rows // 3)
            owners = [[[r // blk for r in t] for t in b] for b in want["hash_ids_global"]]
            if g["owners"] != owners:
                sys.exit("FAIL %s/%s layer %s: owners differ" % (c["name"], flavour, lid))
            checked += 1
print("hash CLI: %d (case, flavour, layer) combinations equal to the golden vectors" % checked)
if checked < 10: sys.exit("FAIL: too few cases checked (%d)" % checked)
PY
