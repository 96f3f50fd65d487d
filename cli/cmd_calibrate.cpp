// `tandem calibrate --backend cpu|cuda [--out FILE] [--repeats N] [--min-time S] [CONFIG] [-- MEGATRON_FLAGS]`
//
// Times every distinct compute instruction of the job's programs on a real device
// (backends/executor/op_timer.h) and writes the measured profile that
// `tandem simulate --profile FILE` uses instead of its analytical compute model (format in
// backends/sim/compute_model.h). A CPU profile carries no "gpu" field, so it loads for any
// simulated GPU; its "source" says that the times are of a CPU.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu_device.h"
#include "backends/executor/op_timer.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "cli/job_report.h"
#include "cli/sim_report.h"
#include "cli/table.h"
#include "core/check.h"
#include "core/job_fields.h"
#include "core/job_loader.h"
#ifdef TANDEM_HAVE_CUDA
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_tensor_device.h"
#endif

namespace tandem::cli {
namespace {

void print_calibrate_help() {
  std::printf(
      "usage: tandem calibrate --backend cpu|cuda [--out FILE] [--repeats N] [--min-time S]\n"
      "                        [--cluster NAME|FILE] [--gpus N] [CONFIG.json|PRESET] [-- MEGATRON_FLAGS...]\n\n"
      "Times every distinct compute op of the job's per-rank programs (GEMMs, attention, norms,\n"
      "activations, RoPE, cross-entropy, MoE router/permute, AdamW) on a real device, with the same\n"
      "device calls `tandem train` makes for it, and writes a measured profile for\n"
      "`tandem simulate --profile FILE`. Communication is not timed; ops without a faithful\n"
      "device mapping (e.g. context-parallel ring steps) are listed as skipped and keep the\n"
      "analytical model.\n"
      "e.g. tandem calibrate --backend cpu --out cpu.json --gpus 1 -- --num-layers 2 --hidden-size 256 \\\n"
      "       --num-attention-heads 4 --seq-length 256 --vocab-size 4096 --micro-batch-size 1 --global-batch-size 4\n"
      "     tandem simulate --profile cpu.json --gpus 1 -- (the same flags)\n\n"
      "  --backend cpu     time on this machine's CPU (fp32 kernels; the profile's times are of a CPU)\n"
      "  --backend cuda    time on the first visible NVIDIA GPU\n"
      "  --out FILE        profile to write (default profile-BACKEND.json), atomically\n"
      "  --repeats N       timed calls per op at least, after one warm-up call (default 5)\n"
      "  --min-time S      and at least S seconds of timed calls per op (default 0.05)\n");
}

// The CPU's model name (/proc/cpuinfo), or "cpu".
std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) break;
    std::string name = line.substr(colon + 1);
    while (!name.empty() && name.front() == ' ') name.erase(name.begin());
    if (!name.empty()) return name;
  }
  return "cpu";
}

// Fails before any timing when --out cannot be written: its directory must exist and be writable.
void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  std::error_code ec;
  if (path.empty() || fs::is_directory(path, ec)) throw_field_error("--out", path, "expected a file name");
  if (!fs::is_directory(dir, ec)) throw_field_error("--out", path, "directory " + dir.string() + " does not exist");
  if (access(dir.c_str(), W_OK) != 0) throw_field_error("--out", path, "directory " + dir.string() + " is not writable");
}

std::string shape_text(const exec::OpShape& s) {
  std::string t = "m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k);
  if (s.batch > 1) t += " batch=" + std::to_string(s.batch);
  return t;
}

std::string op_text(const exec::OpShape& s) {
  return std::string(to_string(s.kind)) + " " + to_string(s.site) + (s.backward && s.kind == OpKind::Elementwise ? " (bwd)" : "") +
         (s.step >= 0 ? " step " + std::to_string(s.step) : "");
}

std::string timing_table(const exec::OpTimingReport& r) {
  Table t({"op", "shape", "count", "time (us)", "GFLOP/s", "device calls"});
  for (const exec::OpTiming& x : r.timed)
    t.add_row({op_text(x.op), shape_text(x.op), std::to_string(x.op.count), fixed(x.seconds * 1e6, 1),
               x.op.flops > 0 ? fixed(x.op.flops / x.seconds / 1e9, 1) : "-", x.calls});
  std::string out = t.render();
  if (r.skipped.empty()) return out;
  Table s({"skipped op", "shape", "count", "why"});
  for (const exec::SkippedOp& x : r.skipped)
    s.add_row({op_text(x.op), shape_text(x.op), std::to_string(x.op.count), x.reason});
  return out + "\n" + s.render();
}

exec::OpTimingReport calibrate_on(exec::Device& device, const Job& job, const exec::OpTimerOptions& base) {
  const std::vector<RankProgram> programs = exec::representative_programs(job);
  const std::vector<exec::OpShape> shapes = exec::collect_op_shapes(job, programs);
  exec::OpTimerOptions options = base;
  const auto bar = stderr_progress();
  options.progress = [&bar](size_t i, size_t total, const exec::OpShape& op) {
    bar(static_cast<double>(i) / static_cast<double>(total),
        "[" + std::to_string(i + 1) + "/" + std::to_string(total) + "] " + op.describe());
  };
  exec::OpTimingReport report = exec::time_ops(device, job, shapes, options);
  finish_progress();
  return report;
}

// Times the job's ops on the first visible GPU and writes a profile for the cluster's GPU kind
// (the simulator refuses a profile of another kind). Without a device: one line, exit 2.
int calibrate_cuda(const JobRequest& request, const exec::OpTimerOptions& options, const std::string& out) {
#ifdef TANDEM_HAVE_CUDA
  std::string why;
  const auto devices = tandem::cuda::visible_devices(&why);
  if (devices.empty()) {
    std::fprintf(stderr, "tandem calibrate: error: no CUDA device visible (%s)\n", why.empty() ? "count 0" : why.c_str());
    return 2;
  }
  const Job job = load_job(request);
  cuda::CudaDevice device(cuda::CudaDeviceOptions{0, 0});
  const exec::OpTimingReport report = calibrate_on(device, job, options);
  const std::string& kind = job.cluster.gpu.name;
  if (devices[0].name.find(kind.substr(0, kind.find('-'))) == std::string::npos)
    std::fprintf(stderr, "tandem calibrate: warning: measured on %s, written as a profile of the cluster's %s\n",
                 devices[0].name.c_str(), kind.c_str());
  const nlohmann::json doc = {
      {"gpu", kind},
      {"source", "tandem calibrate --backend cuda on " + devices[0].name + " (" + tandem::cuda::version_string() +
                     "): fp32 tensors, bf16 GEMM/attention operands"},
      {"entries", exec::profile_entries(report)}};
  write_file_atomically("--out", out, doc.dump(2) + "\n");
  std::printf("%s\n\n%s\n", layout_summary(job).c_str(), timing_table(report).c_str());
  std::printf("wrote %s: %zu measured ops on %s (%zu skipped)\nnext: tandem simulate --profile %s [the same job]\n",
              out.c_str(), doc["entries"].size(), devices[0].name.c_str(), report.skipped.size(), out.c_str());
  return 0;
#else
  (void)request, (void)options, (void)out;
  std::fprintf(stderr, "tandem calibrate: error: no CUDA device: this build has no CUDA backend (TANDEM_WITH_CUDA=OFF)\n");
  return 2;
#endif
}

int run_calibrate(const std::vector<std::string>& args) {
  const JobOptions opts = parse_job_options(args, {"--backend", "--out", "--repeats", "--min-time"}, {"--help", "-h"});
  if (opts.extra.count("--help") || opts.extra.count("-h")) return print_calibrate_help(), 0;
  if (opts.json_out) throw UserError("--json: calibrate writes its profile with --out FILE");
  if (!opts.extra.count("--backend")) throw UserError("--backend: missing (cpu or cuda)");
  const std::string backend = opts.extra.at("--backend");
  if (backend != "cpu" && backend != "cuda") throw_field_error("--backend", backend, "must be cpu or cuda");
  if (!opts.request.stragglers.empty())
    throw_field_error("--straggler", opts.request.stragglers.front(),
                      "stragglers are a simulated condition; calibrate times the device it runs on");
  exec::OpTimerOptions options;
  if (opts.extra.count("--repeats")) options.min_repeats = parse_int("--repeats", opts.extra.at("--repeats"), 1, 1000000);
  if (opts.extra.count("--min-time"))
    options.min_seconds = parse_real("--min-time", opts.extra.at("--min-time"), 0.0, 3600.0);
  const std::string out = opts.extra.count("--out") ? opts.extra.at("--out") : "profile-" + backend + ".json";
  check_writable(out);
  if (backend == "cuda") return calibrate_cuda(opts.request, options, out);
  const Job job = load_job(opts.request);
  cpu::CpuDevice device;
  const exec::OpTimingReport report = calibrate_on(device, job, options);
  const std::string cpu = cpu_model_name();
  const nlohmann::json doc = {
      {"source", "tandem calibrate --backend cpu on " + cpu +
                     ": times of fp32 CPU kernels, not of a GPU (no \"gpu\" field: loads for any simulated GPU)"},
      {"entries", exec::profile_entries(report)}};
  write_file_atomically("--out", out, doc.dump(2) + "\n");
  std::printf("%s\n\n%s\n", layout_summary(job).c_str(), timing_table(report).c_str());
  std::printf("wrote %s: %zu measured ops on %s (%zu skipped)\nnext: tandem simulate --profile %s [the same job]\n",
              out.c_str(), doc["entries"].size(), cpu.c_str(), report.skipped.size(), out.c_str());
  return 0;
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(calibrate, "calibrate", "time the job's compute ops on a real device: a profile for simulate",
                        tandem::cli::run_calibrate)
