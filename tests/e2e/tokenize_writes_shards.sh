#!/usr/bin/env bash
# tokenize_writes_shards.sh — `engram tokenize` as a user runs it, with a small GPT-2-style
# tokenizer (encoder.json + vocab.bpe) built here: shards hold exactly the end-of-text-separated
# ids of the documents, split train/val by the documented block rule; a second run refuses to
# overwrite and leaves the shards as they were; --shard-tokens cuts files; --print/--decode round
# trip; bad input (invalid UTF-8, unsupported tokenizer, missing files) is refused in one line, exit 2,
# without leaving shards behind. Args: $1 engram binary. Needs /usr/bin/python3 (skips without).
set -uo pipefail
engram=$1
py=${ENGRAM_PYTHON:-/usr/bin/python3}
"$py" -c 'import json' 2>/dev/null || { echo "SKIP: $py not found"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# A byte-level vocab: the 256 byte characters, a few merges, <|endoftext|>.
mkdir "$tmp/tok"
"$py" - "$tmp/tok" <<'PY'
import json, sys
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:]; n = 0
for b in range(256):
    if b not in bs: bs.append(b); cs.append(256 + n); n += 1
byte_char = {b: chr(c) for b, c in zip(bs, cs)}
vocab = {byte_char[b]: b for b in range(256)}
merges = [("t", "h"), ("th", "e"), ("Ġ", "the"), ("i", "n"), ("Ġ", "in")]
for a, b in merges: vocab[a + b] = len(vocab)
vocab["<|endoftext|>"] = len(vocab)
json.dump(vocab, open(sys.argv[1] + "/encoder.json", "w"))
open(sys.argv[1] + "/vocab.bpe", "w").write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
PY
printf 'In the beginning God created the heaven and the earth.\n' > "$tmp/a.txt"
for i in $(seq 1 40); do printf 'Line %d: the quick brown fox jumps over the lazy dog, in the end.\n' "$i"; done > "$tmp/b.txt"
printf 'caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 the end\n' > "$tmp/c.txt"

out=$("$engram" tokenize --tokenizer "$tmp/tok" --out "$tmp/shards" --val-block 64 --val-fraction 0.25 \
      "$tmp/a.txt" "$tmp/b.txt" "$tmp/c.txt") || fail "tokenize exited $?"
[[ $out == "tokenize: 3 files"*"tokens"*"MB/s"* ]] || fail "summary line: $out"
ls "$tmp/shards"/train_000000.bin "$tmp/shards"/val_000000.bin >/dev/null || fail "shards missing"

# The shards hold [eot] ids(a) [eot] ids(b) [eot] ids(c), block c to val iff round((c+1)F) > round(cF).
for f in a b c; do "$engram" tokenize --tokenizer "$tmp/tok" --print "$tmp/$f.txt" > "$tmp/$f.ids"; done
"$py" - "$tmp" <<'PY' || fail "shard contents"
import struct, sys, glob, json
d = sys.argv[1]
V = len(json.load(open(d + "/tok/encoder.json"))); eot = V - 1
stream = []
for f in "abc":
    stream += [eot] + [int(x) for x in open(f"{d}/{f}.ids").read().split()]
def read(path):
    b = open(path, "rb").read()
    magic, ver, vocab, n = b[:8], *struct.unpack("<IIQ", b[8:24])
    assert magic == b"ENGRAMTK" and ver == 1 and vocab == V and len(b) == 24 + 4 * n, (path, magic, ver, vocab, n)
    return list(struct.unpack(f"<{n}I", b[24:]))
train = sum((read(p) for p in sorted(glob.glob(d + "/shards/train_*.bin"))), [])
val = sum((read(p) for p in sorted(glob.glob(d + "/shards/val_*.bin"))), [])
is_val = lambda c: ((c + 1) * 250000 + 500000) // 10**6 > (c * 250000 + 500000) // 10**6
want_t = [t for i, t in enumerate(stream) if not is_val(i // 64)]
want_v = [t for i, t in enumerate(stream) if is_val(i // 64)]
assert train == want_t and val == want_v and len(val) > 0, (len(train), len(want_t), len(val), len(want_v))
print(f"shards: {len(stream)} tokens, train {len(train)}, val {len(val)}: as documented")
PY

# never overwrite: refused, one line, exit 2, shards unchanged
sum_before=$(cat "$tmp/shards"/*.bin | md5sum)
err=$("$engram" tokenize --tokenizer "$tmp/tok" --out "$tmp/shards" "$tmp/a.txt" 2>&1 >/dev/null); rc=$?
[[ $rc -eq 2 && $err == *"exists; engram never overwrites shards"* && $(wc -l <<<"$err") -eq 1 ]] || fail "overwrite: rc=$rc $err"
[[ $(cat "$tmp/shards"/*.bin | md5sum) == "$sum_before" ]] || fail "shards changed by a refused run"

# --shard-tokens cuts files; the same stream comes back
"$engram" tokenize --tokenizer "$tmp/tok" --out "$tmp/small" --val-fraction 0 --shard-tokens 100 \
    "$tmp/a.txt" "$tmp/b.txt" "$tmp/c.txt" >/dev/null || fail "--shard-tokens run"
n_files=$(ls "$tmp/small"/train_*.bin | wc -l)
[[ $n_files -ge 3 && ! -e "$tmp/small/val_000000.bin" ]] || fail "--shard-tokens 100 gave $n_files train files"

# --print / --decode round trip
"$engram" tokenize --tokenizer "$tmp/tok" --decode "$tmp/c.ids" | cmp -s - "$tmp/c.txt" || fail "--decode(--print) != text"

expect() {  # expect FRAGMENT cmd...
  local frag=$1; shift
  local e rc
  e=$("$@" 2>&1 >/dev/null); rc=$?
  [[ $rc -eq 2 && $e == *"$frag"* && $(wc -l <<<"$e") -eq 1 ]] || fail "'$*' gave rc=$rc: $e (wanted: $frag)"
}
printf 'ok\n' > "$tmp/good.txt"; printf 'bad \xff byte\n' > "$tmp/latin.txt"
expect "latin.txt: invalid UTF-8 at byte 4" "$engram" tokenize --tokenizer "$tmp/tok" --out "$tmp/o1" "$tmp/good.txt" "$tmp/latin.txt"
[[ -z $(ls -A "$tmp/o1") ]] || fail "a failed run left files: $(ls "$tmp/o1")"
echo '{"model": {"type": "Unigram", "vocab": []}}' > "$tmp/uni.json"
expect "uni.json: model type Unigram is not supported" "$engram" tokenize --tokenizer "$tmp/uni.json" --print "$tmp/good.txt"
expect "nope: no such tokenizer file or directory" "$engram" tokenize --tokenizer "$tmp/nope" --print "$tmp/good.txt"
expect "cannot read $tmp/missing.txt" "$engram" tokenize --tokenizer "$tmp/tok" --out "$tmp/o2" "$tmp/missing.txt"
expect "--val-fraction must be in [0, 1)" "$engram" tokenize --tokenizer "$tmp/tok" --out "$tmp/o3" --val-fraction 1 "$tmp/a.txt"
expect "unknown option --bogus" "$engram" tokenize --bogus
[[ $fails -eq 0 ]] && echo "tokenize: shards, refusals and round trip as documented"
exit $((fails > 0))
