// `tandem train --backend cpu|cuda [--ranks N] [--json FILE] [--metrics FILE.jsonl] [--plot FILE.png]
//               [--trace-ops FILE] [CONFIG] [-- MEGATRON_FLAGS]`
//
// Trains the job for real. Under an MPI launcher (mpirun, srun) it uses the ranks it is given
// (--gpus defaults to that world). With --ranks N outside a launcher it starts itself under
// `mpirun -np N --oversubscribe` and returns that run's exit code ($TANDEM_MPIRUN names another
// launcher). Rank 0 logs and writes the JSON (losses, grad_norms, lrs per iteration) and the op
// trace of the first iteration; it appends the metrics JSONL as it trains, writes TensorBoard
// events under Megatron's --tensorboard-dir and the loss plot at the end.
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu_train.h"
#include "backends/cpu/mpi_comm.h"
#include "backends/executor/metrics_log.h"
#include "backends/executor/tensorboard_writer.h"
#include "cli/loss_plot.h"
#include "cli/command_registry.h"
#include "cli/job_options.h"
#include "core/check.h"
#include "core/job_fields.h"
#include "core/job_loader.h"
#ifdef TANDEM_HAVE_CUDA
#include "backends/cuda/cuda_device.h"
#include "backends/cuda/cuda_train.h"
#endif

namespace tandem::cli {
namespace {

void print_train_help() {
  std::printf(
      "usage: tandem train --backend cpu|cuda [--ranks N] [--json FILE] [--metrics FILE.jsonl] [--plot FILE.png]\n"
      "                    [--trace-ops FILE]\n"
      "                    [--cluster NAME|FILE] [--gpus N] [CONFIG.json|PRESET] [-- MEGATRON_FLAGS...]\n\n"
      "Trains the job for real, one process per rank, executing the same per-rank programs that\n"
      "`tandem simulate` plays. Megatron flags choose the rest: data (--mock-data, or Megatron's\n"
      "indexed datasets in Megatron-Core's sample order: --data-path PREFIX or a blend W1 P1 W2 P2 ...,\n"
      "with --split and --seed), --train-iters, --lr/--min-lr/--lr-decay-style/--lr-warmup-iters, --clip-grad,\n"
      "--seed/--init-method-std, --eval-interval/--eval-iters, --save/--save-interval/--load\n"
      "(checkpoints load into any layout), --log-interval, --tensorboard-dir DIR (Megatron's event files;\n"
      "--tensorboard-log-interval, --log-timers-to-tensorboard, --log-validation-ppl-to-tensorboard,\n"
      "--log-memory-to-tensorboard).\n"
      "e.g. tandem train --backend cpu --ranks 2 -- --num-layers 2 --hidden-size 64 --num-attention-heads 4 \\\n"
      "       --seq-length 32 --vocab-size 128 --train-iters 10 --lr 1e-3 --mock-data --tensor-model-parallel-size 2\n\n"
      "  --backend cpu     fp32 on CPUs, MPI between ranks\n"
      "  --backend cuda    one NVIDIA GPU per rank, NCCL between ranks, bf16 GEMM/attention operands\n"
      "                    (memory pool sized from the program; TANDEM_CUDA_POOL_BYTES overrides, 0 grows)\n"
      "  --ranks N         start N ranks with mpirun (not needed under mpirun/srun)\n"
      "  --json FILE       per-iteration losses, grad_norms, lrs, timings\n"
      "  --metrics FILE    one JSON line per iteration as it trains (README: Training logs); with --load\n"
      "                    the records up to the checkpoint are kept and the run appends\n"
      "  --plot FILE.png   the loss curve (train, validation) at the end, %dx%d pixels\n"
      "  --trace-ops FILE  per-rank op trace of the first iteration (compare: tandem simulate --trace-ops)\n"
      "  --dump-first-step FILE  one rank: initial weights, batch, logits, loss and gradients of step 1\n"
      "                    (JSON), for an independent reference (tests/cpu/torch_model_reference.py)\n"
      "  --record-routing FILE  MoE: routing counts of the first iteration, for tandem simulate\n"
      "                    --moe-routing trace --moe-routing-trace FILE\n",
      kPlotWidth, kPlotHeight);
}

// Whether --backend cuda can run here; if not, says why in one line and returns false.
bool cuda_usable() {
#ifdef TANDEM_HAVE_CUDA
  std::string why;
  if (!tandem::cuda::visible_devices(&why).empty()) return true;
  std::fprintf(stderr, "tandem train: error: no CUDA device visible (%s)\n", why.empty() ? "count 0" : why.c_str());
  return false;
#else
  std::fprintf(stderr, "tandem train: error: no CUDA device: this build has no CUDA backend (TANDEM_WITH_CUDA=OFF)\n");
  return false;
#endif
}

// Rank 0's logs, opened before training so a bad path stops the run before its first iteration.
std::vector<std::shared_ptr<exec::TrainingLog>> open_training_logs(const JobOptions& opts, const Job& job) {
  std::vector<std::shared_ptr<exec::TrainingLog>> logs;
  if (opts.extra.count("--plot")) {
    namespace fs = std::filesystem;
    const std::string& path = opts.extra.at("--plot");
    const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
    if (!fs::is_directory(dir) || access(dir.c_str(), W_OK) != 0)
      throw UserError("--plot = " + path + ": cannot write into " + dir.string() + " (missing or not writable)");
  }
  if (opts.extra.count("--metrics"))
    logs.push_back(std::make_shared<exec::MetricsLog>("--metrics", opts.extra.at("--metrics")));
  if (!job.training.tensorboard_dir.empty()) logs.push_back(std::make_shared<exec::TensorBoardWriter>(job.training));
  return logs;
}

void write_plot(const JobOptions& opts, const exec::TrainReport& report) {
  LossCurves curves;
  if (opts.extra.count("--metrics")) {
    curves = curves_from_metrics("--metrics", opts.extra.at("--metrics"));   // the whole run, resumed or not
  } else {
    for (size_t i = 0; i < report.losses.size(); ++i)
      curves.train.emplace_back(double(report.first_iteration + int64_t(i)), report.losses[i]);
    for (const auto& [it, loss] : report.eval_losses) curves.eval.emplace_back(double(it), loss);
  }
  write_file_atomically("--plot", opts.extra.at("--plot"), loss_plot_png(curves));
}

exec::TrainReport train_on(const std::string& backend, const Job& job, const exec::TrainOptions& options) {
#ifdef TANDEM_HAVE_CUDA
  if (backend == "cuda") return cuda::train_on_cuda(job, options);
#endif
  TANDEM_CHECK_MSG(backend == "cpu", "backend " << backend << " reached training");
  return cpu::train_on_cpu(job, options);
}

// Ranks started by relaunch_under_mpirun that all refuse the same input (AgreedUserError) exit 0,
// so mpirun adds no banner of its own, and rank 0 writes the exit code into this file for the
// launcher to return.
constexpr const char* kRanksStatusEnv = "TANDEM_RANKS_STATUS";

// Re-executes this command under mpirun with N ranks; returns its exit code.
int relaunch_under_mpirun(int64_t ranks, const std::vector<std::string>& args) {
  char exe[PATH_MAX] = {};
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) throw UserError("--ranks: cannot find this executable to start it under mpirun");
  const char* launcher = std::getenv("TANDEM_MPIRUN");
  std::vector<std::string> argv = {launcher != nullptr ? launcher : "mpirun", "-np", std::to_string(ranks),
                                   "--oversubscribe", std::string(exe, static_cast<size_t>(len)), "train"};
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--ranks") {
      ++i;
      continue;
    }
    if (args[i].rfind("--ranks=", 0) == 0) continue;
    argv.push_back(args[i]);
  }
  if (geteuid() == 0) {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string status_file = std::string(tmp != nullptr && *tmp != 0 ? tmp : "/tmp") + "/tandem-ranks-status-XXXXXX";
  const int status_fd = mkstemp(status_file.data());
  if (status_fd >= 0) {
    close(status_fd);
    setenv(kRanksStatusEnv, status_file.c_str(), 1);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) throw UserError("--ranks: fork failed");
  if (pid == 0) {
    std::vector<char*> c;
    for (std::string& a : argv) c.push_back(a.data());
    c.push_back(nullptr);
    execvp(c[0], c.data());
    std::fprintf(stderr, "tandem train: error: cannot run '%s' for --ranks (is MPI installed?)\n", c[0]);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  int agreed = 0;
  if (status_fd >= 0) {
    if (FILE* f = std::fopen(status_file.c_str(), "r")) {
      if (std::fscanf(f, "%d", &agreed) != 1) agreed = 0;
      std::fclose(f);
    }
    std::remove(status_file.c_str());
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status) == 0 && agreed != 0 ? agreed : WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

nlohmann::json report_json(const std::string& backend, const Job& job, const exec::TrainReport& r, int world) {
  return {{"backend", backend},
          {"world_size", world},
          {"first_iteration", r.first_iteration},
          {"iterations", r.losses.size()},
          {"losses", r.losses},
          {"grad_norms", r.grad_norms},
          {"lrs", r.lrs},
          {"eval_losses", r.eval_losses},
          {"iteration_times_s", r.iteration_times_s},
          {"elapsed_s", r.elapsed_s},
          {"tokens_per_iteration", r.tokens_per_iteration},
          {"tokens_per_s", r.tokens_per_s},
          {"program_peak_bytes_rank0", r.program_peak_bytes},
          {"device_peak_bytes_rank0", r.device_peak_bytes},
          {"notes", r.notes},
          {"job", job_to_json(job)}};
}

int train_here(const JobOptions& opts, const std::string& backend, cpu::MpiSession& mpi) {
  JobRequest request = opts.request;
  const bool defaulted = !request.gpus;
  if (defaulted) request.gpus = mpi.size();
  if (!request.stragglers.empty())
    throw_field_error("--straggler", request.stragglers.front(), "stragglers are a simulated condition; a real run has "
                                                                 "the hardware it runs on");
  Job job;
  try {
    job = load_job(request);
  } catch (const UserError& e) {
    // The hint only where the world size is the cause (not, e.g., a bad logging flag).
    if (!defaulted || std::string(e.what()).find("--gpus") == std::string::npos) throw;
    throw UserError(std::string(e.what()) + " (--gpus defaults to this run's " + std::to_string(mpi.size()) +
                    " MPI ranks; start more with --ranks N or under mpirun)");
  }
  exec::TrainOptions options;
  options.trace_ops = opts.extra.count("--trace-ops") > 0;
  options.dump_first_step = opts.extra.count("--dump-first-step") > 0;
  options.record_routing = opts.extra.count("--record-routing") > 0;
  if (options.record_routing && !job.model.is_moe()) throw UserError("--record-routing needs an MoE model (--num-experts)");
  options.log = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  if (mpi.rank() == 0) options.training_logs = open_training_logs(opts, job);
  const exec::TrainReport report = train_on(backend, job, options);
  if (mpi.rank() != 0) return 0;
  if (report.losses.empty()) {
    std::printf("nothing to train: the checkpoint is at iteration %lld of %lld\n",
                static_cast<long long>(report.first_iteration - 1), static_cast<long long>(job.training.train_iters));
    return 0;
  }
  std::printf("trained %zu iterations on %d ranks in %.2f s: final loss %.6f, %.0f tokens/s\n", report.losses.size(),
              mpi.size(), report.elapsed_s, report.losses.back(), report.tokens_per_s);
  if (opts.json_out) write_file_atomically("--json", *opts.json_out, report_json(backend, job, report, mpi.size()).dump(2) + "\n");
  if (opts.extra.count("--plot")) write_plot(opts, report);
  if (options.trace_ops) write_file_atomically("--trace-ops", opts.extra.at("--trace-ops"), report.op_trace);
  if (options.dump_first_step)
    write_file_atomically("--dump-first-step", opts.extra.at("--dump-first-step"), report.first_step + "\n");
  if (options.record_routing)
    write_file_atomically("--record-routing", opts.extra.at("--record-routing"), report.routing_trace + "\n");
  return 0;
}

int run_train(const std::vector<std::string>& args) {
  const JobOptions opts = parse_job_options(
      args, {"--backend", "--ranks", "--trace-ops", "--dump-first-step", "--record-routing", "--metrics", "--plot"},
      {"--help", "-h"});
  if (opts.extra.count("--help") || opts.extra.count("-h")) return print_train_help(), 0;
  const std::string backend = opts.extra.count("--backend") ? opts.extra.at("--backend") : "cpu";
  if (backend != "cpu" && backend != "cuda") throw_field_error("--backend", backend, "must be cpu or cuda");
  if (backend == "cuda" && !cuda_usable()) return 2;
  int64_t ranks = 0;
  if (opts.extra.count("--ranks")) ranks = parse_int("--ranks", opts.extra.at("--ranks"), 1, int64_t{1} << 20);
  if (ranks > 0 && !cpu::MpiSession::launched_by_mpi()) return relaunch_under_mpirun(ranks, args);
  cpu::MpiSession mpi;
  if (ranks > 0 && ranks != mpi.size())
    throw_field_error("--ranks", ranks, "differs from the " + std::to_string(mpi.size()) + " ranks of this MPI run");
  try {
    return train_here(opts, backend, mpi);
  } catch (const AgreedUserError& e) {
    // Every rank stopped at the same point: one line from one rank, and a normal exit. Under
    // --ranks the ranks end with 0 (mpirun would add its own banner) and rank 0 leaves the code.
    if (e.report()) std::fprintf(stderr, "tandem train: error: %s\n", e.what());
    const char* status_file = std::getenv(kRanksStatusEnv);
    if (mpi.size() == 1 || status_file == nullptr) return 2;
    if (mpi.rank() == 0) {
      FILE* f = std::fopen(status_file, "w");
      if (f == nullptr) return 2;
      std::fprintf(f, "2\n");
      std::fclose(f);
    }
    return 0;
  } catch (const std::exception& e) {
    const bool user = dynamic_cast<const UserError*>(&e) != nullptr;
    std::fprintf(stderr, "tandem train: error: %s%s\n", e.what(),
                 mpi.size() > 1 ? (" (rank " + std::to_string(mpi.rank()) + ")").c_str() : "");
    if (mpi.size() > 1) {
      std::fflush(stderr);
      // The other ranks may be waiting for this one in a collective: stop them all.
      mpi.abort(user ? 2 : 3);
    }
    return user ? 2 : 3;
  }
}

}  // namespace
}  // namespace tandem::cli

TANDEM_REGISTER_COMMAND(train, "train", "train the job for real (--backend cpu: MPI ranks on CPUs; cuda: GPUs)",
                        tandem::cli::run_train)
