// Reference token ids from Hugging Face's JavaScript tokenizers (npm @huggingface/tokenizers, which
// reads tokenizer.json as the Rust `tokenizers` crate does, Oniguruma regex semantics included),
// for every sentence of one key of a JSONL corpus.
// usage: node encode_hf.mjs NODE_MODULES_DIR TOKENIZER_DIR CORPUS.jsonl KEY > ids.jsonl
// Each output line: [[ids of sentence]...] as tokenizer(text).input_ids (special tokens added).
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const [modules, dir, corpus, key] = process.argv.slice(2);
const entry = path.join(path.resolve(modules), '@huggingface', 'tokenizers', 'dist', 'tokenizers.mjs');
const { Tokenizer } = await import(pathToFileURL(entry).href);
const read = (name) => JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
const tokenizer = new Tokenizer(read('tokenizer.json'), read('tokenizer_config.json'));
const out = [];
for (const line of fs.readFileSync(corpus, 'utf8').split('\n')) {
  if (line.trim() === '') continue;
  const text = JSON.parse(line)[key];
  out.push(JSON.stringify((Array.isArray(text) ? text : [text]).map((s) => tokenizer.encode(s).ids)));
}
fs.writeFileSync(1, out.join('\n') + '\n');
