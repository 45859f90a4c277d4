// hf_compress.js — the reference compression table of spec/ENGRAM.md §2 computed with Hugging Face
// `tokenizers` itself (npm package, Rust core), as §10 describes: the eight normaliser steps built as
// a `Sequence` inside a tokenizer JSON (Tokenizer.fromString), decodeBatch of single ids with
// skip_special_tokens false, the key rules, first-seen ids.
//
// Not here: any comparison with the C code (tests/reference/compress_check.c does that).
//
// Usage: node hf_compress.js TOKENIZER OUT.json [PAD_ID]
//   TOKENIZER: a tokenizer.json, or GPT-2's encoder.json (vocab.bpe beside it; the script assembles
//   the equivalent HF tokenizer.json: BPE model, ByteLevel pre-tokenizer and decoder).
//   PAD_ID: original pad id for pad_c (default 2 for a tokenizer.json, 50256 for GPT-2).
// Env NODE_PATH must reach the `tokenizers` package.
// Writes {"V","Vc","pad_id","pad_c","lookup":[V],"decoded":[V],"raw":[V],"normalized":[V],
//         "decoded_hex","raw_hex","normalized_hex"}: the *_hex arrays are the UTF-8 bytes of the same
// strings in hex, for readers whose JSON parser stops at U+0000 (cJSON); raw is null where the id
// has no token string. normalized[i] = the HF normaliser on decoded[i] (for every id).
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

// The normaliser of §2.1, step by step, as the Engram demo builds it with `normalizers.Sequence`.
const NORMALIZER = {
  type: 'Sequence',
  normalizers: [
    { type: 'NFKC' },
    { type: 'NFD' },
    { type: 'StripAccents' },
    { type: 'Lowercase' },
    { type: 'Replace', pattern: { Regex: '[ \t\r\n]+' }, content: ' ' },
    { type: 'Replace', pattern: { Regex: '^ $' }, content: '\uE000' },
    { type: 'Strip', strip_left: true, strip_right: true },
    { type: 'Replace', pattern: { String: '\uE000' }, content: ' ' },
  ],
};

function tokenizerJson(fields) {
  return JSON.stringify(Object.assign({
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: null, post_processor: null, decoder: null,
    model: { type: 'WordLevel', vocab: {}, unk_token: '[UNK]' },
  }, fields));
}

// GPT-2 as HF ships it (gpt2/tokenizer.json), assembled from encoder.json + vocab.bpe.
function gpt2Json_(encoderPath) {
  const vocab = JSON.parse(fs.readFileSync(encoderPath, 'utf8'));
  const merges = fs.readFileSync(path.join(path.dirname(encoderPath), 'vocab.bpe'), 'utf8')
    .split('\n').filter((l, i) => i > 0 && l.length > 0);
  const eot = vocab['<|endoftext|>'];
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return tokenizerJson({
    added_tokens: [{ id: eot, content: '<|endoftext|>', single_word: false, lstrip: false,
                     rstrip: false, normalized: true, special: true }],
    pre_tokenizer: byteLevel, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '',
             end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  });
}

const hex_ = (s) => (s === null ? null : Buffer.from(s, 'utf8').toString('hex'));

async function main() {
  const [src, out, padArg] = process.argv.slice(2);
  if (!src || !out) throw new Error('usage: node hf_compress.js TOKENIZER OUT.json [PAD_ID]');
  const isGpt2 = path.basename(src) === 'encoder.json';
  const tk = isGpt2 ? Tokenizer.fromString(gpt2Json_(src)) : Tokenizer.fromFile(src);
  const norm = Tokenizer.fromString(tokenizerJson({ normalizer: NORMALIZER })).getNormalizer();
  const padId = padArg !== undefined ? Number(padArg) : (isGpt2 ? 50256 : 2);

  // V = len(tokenizer) = max id + 1 over the base vocabulary and the added tokens.
  const V = Object.values(tk.getVocab(true)).reduce((m, id) => Math.max(m, id), -1) + 1;
  const ids = Array.from({ length: V }, (_, i) => [i]);
  const decoded = await tk.decodeBatch(ids, false);
  const raw = [], normalized = [], lookup = [];
  const keys = new Map();
  for (let i = 0; i < V; i++) {
    raw.push(tk.idToToken(i));
    normalized.push(norm.normalizeString(decoded[i]));
    let key;
    if (decoded[i].includes('\uFFFD')) key = raw[i];
    else key = normalized[i] !== '' ? normalized[i] : decoded[i];
    if (!keys.has(key)) keys.set(key, keys.size);
    lookup.push(keys.get(key));
  }
  const result = {
    V, Vc: keys.size, pad_id: padId, pad_c: lookup[padId], lookup, decoded, raw, normalized,
    decoded_hex: decoded.map(hex_), raw_hex: raw.map(hex_), normalized_hex: normalized.map(hex_),
  };
  fs.writeFileSync(out, JSON.stringify(result));
  console.log(`${path.basename(src)}: V=${V} V'=${keys.size} ` +
              `(${(100 * (1 - keys.size / V)).toFixed(1)}% fewer) pad ${padId} -> ${lookup[padId]}`);
}

module.exports = { NORMALIZER, tokenizerJson };
if (require.main === module)
  main().catch((e) => { console.error(`hf_compress.js: ${e.message}`); process.exit(1); });
