// `tandem generate (--load DIR [--iteration N] | --hf DIR)
//                  (--prompt-ids 1,2,3 | --prompt TEXT --tokenizer-type T [tokenizer files])
//                  --max-new-tokens N [--temperature T] [--top-k K] [--top-p P] [--seed S]
//                  [--no-kv-cache] [--threads N] [--json FILE]`
//
// Generates text on one process from a checkpoint of `tandem train` (read offline, every tensor
// gathered whole, whatever layout saved it, with the job it holds) or from a Hugging Face
// directory (interop::load_hf: the same tensor names). The prompt is run once (prefill) and every
// new token attends to the cached keys and values (backends/cpu/generate.h). Text goes through
// the tokenizers of `tandem preprocess` (data/tokenizer.h): encode for --prompt, decode for the
// output, EOD to stop.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/generate.h"
#include "backends/cpu/ops_gemm.h"
#include "backends/executor/checkpoint.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "core/check.h"
#include "core/job_fields.h"
#include "core/job_loader.h"
#include "data/tokenizer.h"
#include "interop/hf_io.h"

namespace tandem::cli {
namespace {

void print_generate_help() {
  std::printf(
      "usage: tandem generate (--load DIR [--iteration N] | --hf DIR)\n"
      "                       (--prompt-ids 1,2,3 | --prompt TEXT --tokenizer-type T [tokenizer files])\n"
      "                       --max-new-tokens N [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
      "                       [--no-kv-cache] [--threads N] [--json FILE]\n\n"
      "Generates tokens on one CPU process, with a KV cache (the prompt runs once, then each new token\n"
      "attends to the cached keys and values), from a checkpoint saved by `tandem train --save DIR` (any\n"
      "parallel layout: the tensors are gathered whole) or from a Hugging Face model directory (LLaMA or\n"
      "GPT-2 family, as `tandem export --format hf` writes it). Dense GPT- and LLaMA-style models.\n\n"
      "  --load DIR            checkpoint directory (the one given to --save)\n"
      "  --iteration N         which saved iteration (default: the latest)\n"
      "  --hf DIR              Hugging Face directory: config.json + *.safetensors (instead of --load)\n"
      "  --prompt-ids LIST     prompt as comma-separated token ids\n"
      "  --prompt TEXT         prompt as text, encoded by --tokenizer-type; the continuation is printed as text\n"
      "  --tokenizer-type T    as `tandem preprocess`: GPT2BPETokenizer (--vocab-file, --merge-file),\n"
      "                        HuggingFaceTokenizer (--tokenizer-model tokenizer.json or its directory),\n"
      "                        SentencePieceTokenizer (--tokenizer-model), NullTokenizer (whitespace-separated\n"
      "                        ids; --vocab-size N, default the model's vocabulary - 1, EOD = N).\n"
      "                        Generation stops at the tokenizer's EOD; also usable with --prompt-ids\n"
      "  --vocab-file F, --merge-file F, --tokenizer-model F, --vocab-size N   the tokenizer's files / size\n"
      "  --max-new-tokens N    tokens to generate (prompt + N within max_position_embeddings)\n"
      "  --temperature T       0 (default): greedy; > 0: sample from softmax(logits / T)\n"
      "  --top-k K             sample among the K most likely tokens (0: all)\n"
      "  --top-p P             then among the smallest set of probability >= P, in (0, 1] (default 1)\n"
      "  --seed S              sampler seed (default 0): the same seed gives the same tokens\n"
      "  --no-kv-cache         recompute the whole sequence every step (for comparison)\n"
      "  --threads N           GEMM threads (default: every core)\n"
      "  --json FILE           prompt_ids, generated_ids, logprobs (log-probability of each chosen token\n"
      "                        under the model), last_logits, timings; with a tokenizer also text (of the\n"
      "                        generated ids) and prompt_text (the prompt's ids decoded)\n");
}

// args -> option -> value ("" for switches). UserError naming an unknown or incomplete option.
std::map<std::string, std::string> parse_options(const std::vector<std::string>& args) {
  static const std::set<std::string> valued = {
      "--load",       "--iteration",  "--hf",         "--prompt-ids", "--prompt", "--tokenizer-type", "--vocab-file",
      "--merge-file", "--tokenizer-model", "--vocab-size", "--max-new-tokens", "--temperature", "--top-k", "--top-p",
      "--seed",       "--threads",    "--json"};
  static const std::set<std::string> switches = {"--no-kv-cache", "--help", "-h"};
  std::map<std::string, std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (switches.count(a)) {
      out[a] = "";
    } else if (valued.count(a)) {
      if (i + 1 >= args.size()) throw UserError(a + ": missing value");
      if (out.count(a)) throw UserError(a + ": given twice");
      out[a] = args[++i];
    } else {
      throw UserError("unknown option '" + a + "' (see tandem generate --help)");
    }
  }
  return out;
}

std::vector<int32_t> parse_prompt_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t at = 0;
  while (true) {
    const size_t comma = text.find(',', at);
    const std::string piece = text.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    ids.push_back(static_cast<int32_t>(parse_int("--prompt-ids (offset " + std::to_string(at) + ")", piece, 0, INT32_MAX)));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return ids;
}

// The model to generate from: its job and full tensors by tandem name, from a checkpoint
// (metadata.json's job) or a Hugging Face directory (config.json).
struct LoadedModel {
  Job job;
  cpu::WeightMap weights;
  std::string source;        // "checkpoint" or "hf"
  int64_t iteration = 0;     // of a checkpoint
};

LoadedModel load_checkpoint_model(const std::string& dir, int64_t iteration) {
  exec::CheckpointContents c = exec::read_checkpoint(dir, iteration);
  if (c.job_json.empty())
    throw UserError("--load = " + dir + ": the checkpoint's metadata.json holds no job (saved by an older tandem), "
                    "so its model is unknown");
  LoadedModel m;
  apply_job_json(m.job, nlohmann::json::parse(c.job_json), dir + " metadata.json job");
  resolve_job(m.job);
  m.weights = std::move(c.tensors);
  m.source = "checkpoint";
  m.iteration = c.iteration;
  return m;
}

LoadedModel load_hf_model(const std::string& dir) {
  interop::HfModel hf = interop::load_hf(dir);
  LoadedModel m;
  m.job = std::move(hf.job);
  m.weights = std::move(hf.tensors);
  m.source = "hf";
  return m;
}

// The tokenizer of --tokenizer-type and its files. A NullTokenizer without --vocab-size takes the
// model's vocabulary V (ids 0..V-2, EOD = V-1), so it needs `model_vocab`; the others do not.
std::unique_ptr<data::Tokenizer> make_tokenizer(const std::map<std::string, std::string>& o,
                                                std::optional<int64_t> model_vocab) {
  data::TokenizerOptions t;
  t.type = o.at("--tokenizer-type");
  auto get = [&](const char* flag) { return o.count(flag) ? o.at(flag) : std::string(); };
  t.vocab_file = get("--vocab-file");
  t.merge_file = get("--merge-file");
  t.tokenizer_model = get("--tokenizer-model");
  if (o.count("--vocab-size"))
    t.vocab_size = parse_int("--vocab-size", o.at("--vocab-size"), 1, INT32_MAX - 1);
  else if (t.type == "NullTokenizer" && model_vocab)
    t.vocab_size = *model_vocab - 1;
  else if (t.type == "NullTokenizer")
    return nullptr;   // after the model is read
  return data::make_tokenizer(t);
}

cpu::SamplingOptions sampling_options(const std::map<std::string, std::string>& o) {
  cpu::SamplingOptions s;
  if (o.count("--temperature")) s.temperature = parse_real("--temperature", o.at("--temperature"), 0.0, 1e6);
  if (o.count("--top-k")) s.top_k = parse_int("--top-k", o.at("--top-k"), 0, INT32_MAX);
  if (o.count("--top-p")) {
    s.top_p = parse_real("--top-p", o.at("--top-p"), -1e300, 1e300);
    if (!(s.top_p > 0.0 && s.top_p <= 1.0)) throw_field_error("--top-p", o.at("--top-p"), "must be in (0, 1]");
  }
  if (o.count("--seed")) s.seed = static_cast<uint64_t>(parse_int("--seed", o.at("--seed"), 0, INT64_MAX));
  return s;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ' ';
    out += std::to_string(ids[i]);
  }
  return out;
}

nlohmann::json result_json(const std::string& dir, const LoadedModel& m, const std::vector<int32_t>& prompt,
                           const cpu::GenerateResult& r, const cpu::GenerateOptions& g, const data::Tokenizer* tok) {
  nlohmann::json j = {{m.source == "hf" ? "hf" : "checkpoint", dir},
                      {"prompt_ids", prompt},
                      {"generated_ids", r.tokens},
                      {"logprobs", r.logprobs},
                      {"stop_reason", r.stopped_at_eod ? "eod" : "max_new_tokens"},
                      {"kv_cache", g.kv_cache},
                      {"sampling",
                       {{"temperature", g.sampling.temperature},
                        {"top_k", g.sampling.top_k},
                        {"top_p", g.sampling.top_p},
                        {"seed", g.sampling.seed}}},
                      {"last_logits", r.last_logits},
                      {"prefill_s", r.prefill_s},
                      {"decode_s", r.decode_s}};
  if (m.source == "checkpoint") j["iteration"] = m.iteration;
  if (tok != nullptr) {
    j["tokenizer"] = tok->name();
    j["text"] = tok->decode(r.tokens);
    j["prompt_text"] = tok->decode(prompt);   // the prompt as the tokenizer reads its ids back
  }
  return j;
}

// Checks every option that needs no file; throws UserError naming the option.
void check_options(const std::map<std::string, std::string>& o) {
  if (o.count("--load") == o.count("--hf"))
    throw UserError("--load / --hf: give exactly one of them (a checkpoint or a Hugging Face directory)");
  if (o.count("--hf") && o.count("--iteration")) throw UserError("--iteration: only with --load (a checkpoint)");
  if (o.count("--prompt-ids") == o.count("--prompt"))
    throw UserError("--prompt-ids / --prompt: give exactly one of them");
  if (o.count("--prompt") && !o.count("--tokenizer-type"))
    throw UserError("--prompt: needs --tokenizer-type (and its files), or pass --prompt-ids");
  if (!o.count("--tokenizer-type"))
    for (const char* f : {"--vocab-file", "--merge-file", "--tokenizer-model", "--vocab-size"})
      if (o.count(f)) throw UserError(std::string(f) + ": only with --tokenizer-type");
  if (!o.count("--max-new-tokens")) throw UserError("--max-new-tokens: missing");
}

void print_result(const std::vector<int32_t>& prompt, const cpu::GenerateResult& r, const cpu::GenerateOptions& g,
                  const data::Tokenizer* tok) {
  std::printf("prompt (%zu tokens): %s\n", prompt.size(), join_ids(prompt).c_str());
  std::printf("generated (%zu tokens, %s): %s\n", r.tokens.size(),
              r.stopped_at_eod ? "stopped at EOD" : "max-new-tokens reached", join_ids(r.tokens).c_str());
  if (tok) std::printf("text: %s\n", tok->decode(r.tokens).c_str());
  const double steps = static_cast<double>(r.tokens.size() > 1 ? r.tokens.size() - 1 : 0);
  std::printf("%s: prefill %.3f ms, decode %.1f tokens/s (%zu steps in %.3f s)\n",
              g.kv_cache ? "KV cache" : "no KV cache", r.prefill_s * 1e3, r.decode_s > 0 ? steps / r.decode_s : 0.0,
              static_cast<size_t>(steps), r.decode_s);
}

int run_generate(const std::vector<std::string>& args) {
  const std::map<std::string, std::string> o = parse_options(args);
  if (o.count("--help") || o.count("-h")) return print_generate_help(), 0;
  // Every option, and the tokenizer's files, are checked before the model is read.
  check_options(o);
  cpu::GenerateOptions g;
  g.max_new_tokens = parse_int("--max-new-tokens", o.at("--max-new-tokens"), 1, 1 << 24);
  g.sampling = sampling_options(o);
  g.kv_cache = !o.count("--no-kv-cache");
  const int64_t iteration = o.count("--iteration") ? parse_int("--iteration", o.at("--iteration"), 1, INT64_MAX) : 0;
  const int threads = static_cast<int>(o.count("--threads") ? parse_int("--threads", o.at("--threads"), 1, 4096)
                                                             : std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int32_t> prompt;
  if (o.count("--prompt-ids")) prompt = parse_prompt_ids(o.at("--prompt-ids"));
  std::unique_ptr<data::Tokenizer> tok;
  if (o.count("--tokenizer-type")) tok = make_tokenizer(o, std::nullopt);

  const std::string dir = o.count("--hf") ? o.at("--hf") : o.at("--load");
  LoadedModel m = o.count("--hf") ? load_hf_model(dir) : load_checkpoint_model(dir, iteration);
  if (o.count("--tokenizer-type")) {
    if (!tok) tok = make_tokenizer(o, m.job.model.vocab_size);
    if (tok->vocab_size() > m.job.model.vocab_size)
      throw UserError("--tokenizer-type = " + tok->name() + ": the tokenizer has " + std::to_string(tok->vocab_size()) +
                      " ids, the model (" + dir + ") only vocab_size " + std::to_string(m.job.model.vocab_size));
    g.eod = tok->eod();
    if (o.count("--prompt")) {
      try {
        prompt = data::encode_text(*tok, o.at("--prompt"));
      } catch (const UserError& e) {
        throw UserError(std::string("--prompt: ") + e.what());
      }
    }
  }
  cpu::set_gemm_threads(threads);
  cpu::KvCacheDecoder decoder(m.job.model, std::move(m.weights));
  const cpu::GenerateResult r = cpu::generate(decoder, prompt, g);
  if (o.count("--json")) write_file_atomically("--json", o.at("--json"), result_json(dir, m, prompt, r, g, tok.get()).dump(2) + "\n");
  print_result(prompt, r, g, tok.get());
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(generate, "generate", "generate text from a checkpoint or a Hugging Face model (CPU, KV cache)",
                        tandem::cli::run_generate)
