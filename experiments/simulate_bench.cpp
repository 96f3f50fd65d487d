// Wall time and peak memory of simulate() on three jobs:
//   Llama3_405B_16k   LLaMA-3 405B style, 126 layers, TP8 PP16 DP128 on 16,384 H100,
//                     global batch 2048 x 8192 tokens (symmetry-reduced)       target < 60 s, < 4 GiB
//   Gpt3_175B_1k      GPT-3 175B on 1,024 A100, TP8 PP16 DP8, interleaved      target < 5 s
//   Gpt3_175B_1k_AllRanks  the same, every rank played (--all-ranks)           target < 5 min
//   DeepSeekV3_2k     DeepSeek-V3 (preset: PP16, EP64, balanced routing, 1F1B) on 2,048 H800
//                                                                              target < 60 s, < 2 GiB
//   DeepSeekV3_2k_DualPipe  the same with the DualPipe schedule                target < 60 s, < 2 GiB
//
// SimGrid allows one engine per process, so each iteration runs simulate() in a forked child,
// which reports its wall seconds, its peak resident memory (getrusage) and the simulated figures
// through a pipe (manual timing). Run:
//   build/experiments/simulate_bench [--benchmark_filter=405B]
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backends/sim/simulator.h"
#include "core/job_loader.h"

namespace {

using Clock = std::chrono::steady_clock;

// Child's report: wall s, peak RSS MiB, iteration s, MFU, played ranks, SimGrid flows, ghost flows.
constexpr size_t kFields = 7;
using Report = std::array<double, kFields>;

tandem::Job llama3_405b_16k() {
  tandem::JobRequest request;
  request.config_file = "llama3-405b";
  request.cluster = "dgx-h100";
  request.gpus = 16384;
  request.megatron_flags = {"--global-batch-size", "2048", "--seq-length", "8192"};
  return tandem::load_job(request);
}

tandem::Job gpt3_175b_1k() {
  tandem::JobRequest request;
  request.config_file = tandem::data_dir() + "/experiments/jobs/gpt3-175b-a100.json";
  return tandem::load_job(request);
}

tandem::Job deepseek_v3_2k(bool dualpipe) {
  tandem::JobRequest request;
  request.config_file = "deepseek-v3";
  request.cluster = "hgx-h800";
  request.gpus = 2048;
  if (dualpipe) request.megatron_flags = {"--pipeline-schedule", "dualpipe"};
  return tandem::load_job(request);
}

Report run_child(const tandem::Job& job, bool all_ranks) {
  tandem::sim::SimOptions options;
  options.all_ranks = all_ranks;
  const auto start = Clock::now();
  const tandem::sim::SimResult r = tandem::sim::simulate(job, options);
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return {wall,
          static_cast<double>(usage.ru_maxrss) / 1024.0,
          r.iteration_time_s,
          r.mfu,
          static_cast<double>(r.ranks_played),
          static_cast<double>(r.counts.flows),
          static_cast<double>(r.counts.ghost_flows)};
}

// Runs the simulation in a child process; false when it failed.
bool isolated(const tandem::Job& job, bool all_ranks, Report& report) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(fds[0]);
    int code = 0;
    Report out{};
    try {
      out = run_child(job, all_ranks);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "simulation failed: %s\n", e.what());
      code = 2;
    }
    if (write(fds[1], out.data(), sizeof(out)) != static_cast<ssize_t>(sizeof(out))) code = 3;
    close(fds[1]);
    _exit(code);  // a forked child: skip the parent's destructors
  }
  close(fds[1]);
  const ssize_t n = read(fds[0], report.data(), sizeof(report));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return n == static_cast<ssize_t>(sizeof(report)) && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void run(benchmark::State& state, const tandem::Job& job, bool all_ranks) {
  Report report{};
  for (auto _ : state) {
    if (!isolated(job, all_ranks, report)) {
      state.SkipWithError("simulation failed");
      return;
    }
    state.SetIterationTime(report[0]);
  }
  state.counters["wall_s"] = report[0];
  state.counters["peak_rss_MiB"] = report[1];
  state.counters["iteration_s"] = report[2];
  state.counters["mfu"] = report[3];
  state.counters["ranks_played"] = report[4];
  state.counters["flows"] = report[5];
  state.counters["ghost_flows"] = report[6];
}

void Llama3_405B_16k(benchmark::State& state) { run(state, llama3_405b_16k(), false); }
void Gpt3_175B_1k(benchmark::State& state) { run(state, gpt3_175b_1k(), false); }
void Gpt3_175B_1k_AllRanks(benchmark::State& state) { run(state, gpt3_175b_1k(), true); }

void DeepSeekV3_2k(benchmark::State& state) { run(state, deepseek_v3_2k(false), false); }
void DeepSeekV3_2k_DualPipe(benchmark::State& state) { run(state, deepseek_v3_2k(true), false); }

BENCHMARK(Llama3_405B_16k)->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(Gpt3_175B_1k)->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(Gpt3_175B_1k_AllRanks)->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(DeepSeekV3_2k)->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);
BENCHMARK(DeepSeekV3_2k_DualPipe)->UseManualTime()->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace

BENCHMARK_MAIN();
