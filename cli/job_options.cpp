#include "cli/job_options.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/command_registry.h"
#include "core/check.h"
#include "core/job_fields.h"

namespace tandem::cli {

JobOptions parse_job_options(const std::vector<std::string>& args, const std::set<std::string>& valued,
                             const std::set<std::string>& switches) {
  const SplitArgs split = split_at_double_dash(args);
  JobOptions out;
  out.request.megatron_flags = split.megatron;
  const auto& own = split.own;
  for (size_t i = 0; i < own.size(); ++i) {
    std::string opt = own[i], value;
    bool has_inline = false;
    if (auto eq = opt.find('='); opt.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = opt.substr(eq + 1);
      opt = opt.substr(0, eq);
      has_inline = true;
    }
    auto take = [&]() -> std::string {
      if (has_inline) return value;
      if (i + 1 >= own.size()) throw UserError(opt + ": missing value");
      return own[++i];
    };
    if (opt == "--cluster") {
      out.request.cluster = take();
    } else if (opt == "--stack") {
      out.request.stack = take();
    } else if (opt == "--gpus") {
      out.request.gpus = parse_int("--gpus", take(), 1, int64_t{1} << 24);
    } else if (opt == "--straggler") {
      out.request.stragglers.push_back(take());
    } else if (opt == "--json") {
      out.json_out = take();
    } else if (valued.count(opt)) {
      out.extra[opt] = take();
    } else if (switches.count(opt)) {
      if (has_inline) throw UserError(opt + " takes no value");
      out.extra[opt] = "";
    } else if (opt.rfind("-", 0) == 0) {
      throw UserError("unknown option " + opt + " (Megatron flags go after --, e.g. tandem info -- " + opt + " ...)");
    } else if (!out.request.config_file) {
      out.request.config_file = opt;
    } else {
      throw UserError("unexpected argument '" + opt + "' (one CONFIG file or preset name at most)");
    }
  }
  return out;
}

void write_file_atomically(const std::string& option, const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / (target.filename().string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw UserError(option + " = " + path + ": cannot create the file (does its directory exist?)");
    out << text;
    out.flush();
    if (!out) {
      out.close();
      std::error_code ec;
      fs::remove(tmp, ec);
      throw UserError(option + " = " + path + ": write failed");
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw UserError(option + " = " + path + ": cannot rename into place: " + ec.message());
  }
}

}  // namespace tandem::cli
