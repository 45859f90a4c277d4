# hf_common.bash — shared body of hf_deepseek_v3.sh and hf_gpt2.sh (sourced; not a test itself):
# `engram tokenize --print` against Hugging Face tokenizers (npm, via hf_encode.js) on the whole
# KJV, the English and the German fortunes and tests/data/tokenizer_edge.txt, id for id; and the
# decode of every id alone (`--dump-vocab`) against HF's decode([id]).
# Call: hf_compare ENGRAM DATA_DIR TOKENIZER_FILE. Exit 77 (skipped) when node, the npm packages
# or the corpora are missing; `bash jobs/setup.sh` installs them all.
hf_compare() {
  local engram=$1 data=$2 tok=$3
  local here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  local npm=${ENGRAM_NPM:-$here/../../.cache/npm/node_modules}
  local fort=/usr/share/games/fortunes
  command -v node >/dev/null || { echo "SKIP: node not found (bash jobs/setup.sh installs nodejs)"; exit 77; }
  [ -d "$npm/tokenizers" ] || { echo "SKIP: npm tokenizers not in $npm (bash jobs/setup.sh fetches it)"; exit 77; }
  [ -f "$tok" ] || { echo "SKIP: $tok missing (bash jobs/setup.sh fetches it)"; exit 77; }
  command -v bible >/dev/null || [ -x /usr/bin/bible ] || { echo "SKIP: bible (package bible-kjv) missing"; exit 77; }
  [ -d "$fort/de" ] || { echo "SKIP: fortunes / fortunes-de missing (bash jobs/setup.sh)"; exit 77; }
  tmp=$(mktemp -d "${ENGRAM_TEST_TMP:-/tmp}/hf.XXXXXX" 2>/dev/null || mktemp -d)
  trap 'rm -rf "$tmp"' EXIT   # tmp is global: the trap runs after this function returns
  /usr/bin/bible gen1:1-rev22:21 > "$tmp/kjv.txt"
  find "$fort" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | LC_ALL=C sort | xargs cat > "$tmp/fortunes_en.txt"
  find "$fort/de" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | LC_ALL=C sort | xargs cat > "$tmp/fortunes_de.txt"
  cp "$data/tokenizer_edge.txt" "$tmp/edge.txt"
  local pairs=()
  for c in kjv fortunes_en fortunes_de edge; do
    "$engram" tokenize --tokenizer "$tok" --print "$tmp/$c.txt" > "$tmp/$c.ids" || { echo "FAIL: engram tokenize $c"; exit 1; }
    pairs+=("$tmp/$c.txt" "$tmp/$c.ids")
  done
  "$engram" tokenize --tokenizer "$tok" --dump-vocab > "$tmp/vocab.json" || { echo "FAIL: --dump-vocab"; exit 1; }
  echo "reference: HF tokenizers $(node -p "require('$npm/tokenizers/package.json').version"), $tok"
  local rc=0
  ENGRAM_NPM=$npm node "$here/hf_encode.js" "$tok" --compare "${pairs[@]}" || rc=1
  ENGRAM_NPM=$npm node "$here/hf_encode.js" "$tok" --compare-vocab "$tmp/vocab.json" || rc=1
  return $rc
}
