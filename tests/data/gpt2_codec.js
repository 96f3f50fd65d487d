// GPT-2 encode and decode by OpenAI's JavaScript encoder (npm gpt-3-encoder), the reference for
// `tandem generate --prompt` with GPT2BPETokenizer.
// usage: node gpt2_codec.js NODE_MODULES_DIR REQUEST.json > ANSWER.json
// REQUEST: {"encode": [text...], "decode": [[id...]...]}; ANSWER: {"encoded": [[id...]...], "decoded": [text...]}.
// gpt-3-encoder's decode joins the tokens' byte-level text, maps it back to bytes and decodes them
// with TextDecoder (invalid UTF-8 becomes U+FFFD).
const path = require('path');
const fs = require('fs');
const [modules, request] = process.argv.slice(2);
const { encode, decode } = require(path.join(path.resolve(modules), 'gpt-3-encoder'));
const req = JSON.parse(fs.readFileSync(request, 'utf8'));
const answer = { encoded: req.encode.map((t) => encode(t)), decoded: req.decode.map((ids) => decode(ids)) };
fs.writeFileSync(1, JSON.stringify(answer));
