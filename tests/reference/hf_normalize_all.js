// hf_normalize_all.js — Hugging Face `tokenizers`' normaliser of spec/ENGRAM.md §2.1 (the same
// Sequence as hf_compress.js) on every Unicode scalar value alone, U+0000..U+10FFFF without the
// surrogates: a sweep of the Unicode tables HF uses, beyond the characters any one vocabulary has.
//
// Not here: any comparison (tests/reference/compress_check.c --codepoints does that).
// Usage: node hf_normalize_all.js OUT.txt; writes one line per code point: "HEXCP HEXUTF8OUT".
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');
const { NORMALIZER, tokenizerJson } = require('./hf_compress.js');

const norm = Tokenizer.fromString(tokenizerJson({ normalizer: NORMALIZER })).getNormalizer();
const lines = [];
for (let c = 0; c <= 0x10ffff; c++) {
  if (c >= 0xd800 && c <= 0xdfff) continue;
  const out = norm.normalizeString(String.fromCodePoint(c));
  lines.push(`${c.toString(16)} ${Buffer.from(out, 'utf8').toString('hex')}`);
}
fs.writeFileSync(process.argv[2], lines.join('\n') + '\n');
console.log(`${lines.length} code points normalised with tokenizers ` +
            `${require('tokenizers/package.json').version}`);
