// `tandem import --hf DIR --save CKPT_DIR`
//
// Reads a Hugging Face LlamaForCausalLM or GPT2LMHeadModel directory (config.json + safetensors,
// sharded or not) and writes it as a tandem checkpoint that `tandem train --load CKPT_DIR` loads
// into any layout (interop/hf_io.h). Everything is checked before anything is written.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli/command_registry.h"
#include "core/check.h"
#include "interop/hf_io.h"

namespace tandem::cli {
namespace {

void print_import_help() {
  std::printf(
      "usage: tandem import --hf DIR --save CKPT_DIR\n\n"
      "Reads a Hugging Face model directory (config.json with model_type llama or gpt2, and\n"
      "model.safetensors or shards with model.safetensors.index.json; F32, BF16 or F16 weights) and\n"
      "writes it as iteration 1 of a tandem checkpoint, the model's job in its metadata.json.\n"
      "`tandem train --load CKPT_DIR` with the same model flags loads it into any layout and resumes\n"
      "after iteration 1 (Adam moments start at zero). The vocabulary is config.json's vocab_size.\n");
}

int run_import(const std::vector<std::string>& args) {
  std::optional<std::string> hf, save;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& opt = args[i];
    if (opt == "--help" || opt == "-h") return print_import_help(), 0;
    auto take = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UserError(opt + ": missing value");
      return args[++i];
    };
    if (opt == "--hf") hf = take();
    else if (opt == "--save") save = take();
    else throw UserError("unknown option " + opt + " (see tandem import --help)");
  }
  if (!hf) throw UserError("--hf: missing (the Hugging Face model directory; see tandem import --help)");
  if (!save) throw UserError("--save: missing (the checkpoint directory to write; see tandem import --help)");
  const auto t0 = std::chrono::steady_clock::now();
  const interop::HfModel m = interop::import_hf(*hf, *save);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("imported %s (%s, %lld layers, hidden %lld): %zu tensors, %.1f MB read in %.2f s (%.0f MB/s) -> %s "
              "iteration 1\n",
              hf->c_str(), interop::hf_class_name(m.arch.family), static_cast<long long>(m.arch.layers),
              static_cast<long long>(m.arch.hidden), m.tensors.size(), double(m.bytes_read) / 1e6, s,
              double(m.bytes_read) / 1e6 / std::max(s, 1e-9), save->c_str());
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(import_hf, "import", "write a Hugging Face model (safetensors) as a tandem checkpoint",
                        tandem::cli::run_import)
