// Throughput of OpenAI's JavaScript GPT-2 encoder (npm gpt-3-encoder) on a JSONL corpus prefix.
// usage: node js_gpt2_bpe.js NODE_MODULES CORPUS.jsonl MEGABYTES
// prints: documents, tokens, seconds, documents/s, MB/s, tokens/s (one process)
const path = require('path');
const fs = require('fs');
const [modules, corpus, megabytes] = process.argv.slice(2);
const { encode } = require(path.join(path.resolve(modules), 'gpt-3-encoder'));
const lines = fs.readFileSync(corpus, 'utf8').split('\n');
let docs = 0, tokens = 0, read = 0;
const start = process.hrtime.bigint();
for (const line of lines) {
  if (line === '' || read >= Number(megabytes) * 1048576) break;
  const text = JSON.parse(line).text;
  for (const s of Array.isArray(text) ? text : [text]) tokens += encode(s).length;
  docs += 1;
  read += Buffer.byteLength(line, 'utf8') + 1;
}
const t = Number(process.hrtime.bigint() - start) / 1e9;
console.log(`${docs} ${tokens} ${t.toFixed(3)} ${(docs / t).toFixed(0)} ${(read / t / 1048576).toFixed(3)} ${(tokens / t).toFixed(0)}`);
