// `tandem export --load CKPT_DIR [--iteration N] --format hf --out DIR [--dtype fp32|bf16] [--max-shard-size 5GB]`
//
// Writes a training checkpoint as a Hugging Face model directory (interop/hf_io.h): config.json and
// model.safetensors, or shards + model.safetensors.index.json. Offline, no MPI. The directory
// appears complete or not at all (written as DIR.tmp, renamed).
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli/command_registry.h"
#include "core/check.h"
#include "core/job_fields.h"
#include "interop/hf_io.h"

namespace tandem::cli {
namespace {

void print_export_help() {
  std::printf(
      "usage: tandem export --load CKPT_DIR [--iteration N] --format hf --out DIR [--dtype fp32|bf16]\n"
      "                     [--max-shard-size 5GB]\n\n"
      "Writes a checkpoint of `tandem train --save` as a Hugging Face model directory: LLaMA-family\n"
      "models (RMSNorm, RoPE, SwiGLU, GQA) as LlamaForCausalLM, GPT-2-family models (LayerNorm, learned\n"
      "positions, GeLU, biases) as GPT2LMHeadModel, with config.json and safetensors weights.\n\n"
      "  --load DIR          checkpoint directory (any TP/PP/DP layout saved it)\n"
      "  --iteration N       which saved iteration (default: the latest)\n"
      "  --format hf         the output format (Hugging Face safetensors)\n"
      "  --out DIR           new directory to write (must not exist or be empty)\n"
      "  --dtype fp32|bf16   weights in fp32 (default, exact) or bf16 (round to nearest even)\n"
      "  --max-shard-size S  split into model-0000k-of-0000n.safetensors above S (default 5GB;\n"
      "                      GB = 10^9 bytes, GiB = 2^30)\n");
}

int run_export(const std::vector<std::string>& args) {
  std::optional<std::string> load, out, format;
  interop::ExportOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& opt = args[i];
    if (opt == "--help" || opt == "-h") return print_export_help(), 0;
    auto take = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UserError(opt + ": missing value");
      return args[++i];
    };
    if (opt == "--load") load = take();
    else if (opt == "--out") out = take();
    else if (opt == "--format") format = take();
    else if (opt == "--iteration") options.iteration = parse_int("--iteration", take(), 1, int64_t{1} << 40);
    else if (opt == "--max-shard-size") options.max_shard_bytes = interop::parse_size(take(), "--max-shard-size");
    else if (opt == "--dtype") {
      const std::string d = take();
      if (d == "fp32") options.dtype = interop::StDtype::F32;
      else if (d == "bf16") options.dtype = interop::StDtype::BF16;
      else throw_field_error("--dtype", d, "expected fp32 or bf16");
    } else {
      throw UserError("unknown option " + opt + " (see tandem export --help)");
    }
  }
  if (!load) throw UserError("--load: missing (the checkpoint directory; see tandem export --help)");
  if (!out) throw UserError("--out: missing (the directory to write; see tandem export --help)");
  if (!format) throw UserError("--format: missing (hf)");
  if (*format != "hf") throw_field_error("--format", *format, "expected hf (Hugging Face safetensors)");
  const auto t0 = std::chrono::steady_clock::now();
  const interop::ExportReport r = interop::export_hf(*load, *out, options);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("exported %s iteration %lld as %s: %lld tensors, %lld file%s, %.1f MB in %.2f s (%.0f MB/s) -> %s\n",
              load->c_str(), static_cast<long long>(r.iteration), interop::hf_class_name(r.arch.family),
              static_cast<long long>(r.tensors), static_cast<long long>(r.files), r.files == 1 ? "" : "s",
              double(r.bytes) / 1e6, s, double(r.bytes) / 1e6 / std::max(s, 1e-9), out->c_str());
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(export_hf, "export", "write a checkpoint as a Hugging Face model (safetensors)",
                        tandem::cli::run_export)
