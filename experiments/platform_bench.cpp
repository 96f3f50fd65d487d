// Platform build time and one all-reduce over every GPU, at 1k / 4k / 16k GPUs.
//
// SimGrid allows one engine per process, so each iteration runs in a forked child that reports
// its wall-clock seconds through a pipe (manual timing). Run:
//   build/experiments/platform_bench [--benchmark_filter=Build]
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <simgrid/s4u.hpp>

#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>

#include "backends/sim/collectives.h"
#include "backends/sim/platform.h"

namespace {

using tandem::ClusterSpec;
using tandem::sim::Algorithm;
using tandem::sim::Collectives;
using tandem::sim::Group;
using tandem::sim::Pending;
using tandem::sim::Platform;
namespace sg4 = simgrid::s4u;
using Clock = std::chrono::steady_clock;

// DGX H100 SuperPOD-like: 8 GPUs per node, 8 NICs, 32 nodes per leaf, full fat tree.
ClusterSpec h100_superpod() {
  ClusterSpec c;
  c.name = "bench-h100";
  c.gpu.peak_flops_bf16 = 989.5e12;  // FLOP/s
  c.gpus_per_node = 8;
  c.nvlink_bandwidth = 450e9;  // bytes/s
  c.nvlink_latency = 2e-6;     // s
  c.nics_per_node = 8;
  c.nic_bandwidth = 50e9;      // bytes/s
  c.nic_latency = 3e-6;        // s
  c.nodes_per_leaf = 32;
  c.nodes_per_pod = 256;       // 2,048 GPUs per pod
  return c;
}

constexpr size_t kResults = 3;
using Results = std::array<double, kResults>;

// Runs `body` in a child process; returns what it measured.
bool run_child(const std::function<Results()>& body, Results& out) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(fds[0]);
    const Results r = body();
    const ssize_t written = write(fds[1], r.data(), sizeof(r));
    close(fds[1]);
    _exit(written == static_cast<ssize_t>(sizeof(r)) ? 0 : 1);
  }
  close(fds[1]);
  const ssize_t got = read(fds[0], out.data(), sizeof(out));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return got == static_cast<ssize_t>(sizeof(out)) && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void BM_PlatformBuild(benchmark::State& state) {
  const int64_t gpus = state.range(0);
  for (auto _ : state) {
    Results r{};
    const bool ok = run_child(
        [&] {
          const auto t0 = Clock::now();
          Platform platform(h100_superpod(), gpus);
          return Results{seconds_since(t0), static_cast<double>(platform.num_nodes()), 0};
        },
        r);
    if (!ok) {
      state.SkipWithError("child failed");
      return;
    }
    state.SetIterationTime(r[0]);
  }
  state.counters["gpus"] = static_cast<double>(gpus);
}

// One 1 GiB all-reduce over every GPU, one actor per GPU. Times actors + simulation, not the build.
void BM_WorldAllReduce(benchmark::State& state) {
  const int64_t gpus = state.range(0);
  const auto algorithm = static_cast<Algorithm>(state.range(1));
  Results r{};
  for (auto _ : state) {
    const bool ok = run_child(
        [&] {
          Platform platform(h100_superpod(), gpus);
          Collectives coll(platform);
          Group world{"world", {}};
          for (int64_t g = 0; g < gpus; ++g) world.gpus.push_back(g);
          const auto t0 = Clock::now();
          coll.plan(tandem::sim::CollectiveKind::AllReduce, algorithm, world, 1.0);  // plan once, timed
          const double plan_s = seconds_since(t0);
          for (int64_t g = 0; g < gpus; ++g)
            sg4::Actor::create("rank", platform.host(g), [&coll, &world, algorithm, g] {
              coll.start_all_reduce(world, g, 1024.0 * 1024.0 * 1024.0, algorithm).wait();
            });
          const double simulated = platform.run();
          return Results{seconds_since(t0), simulated, plan_s};
        },
        r);
    if (!ok) {
      state.SkipWithError("child failed");
      return;
    }
    state.SetIterationTime(r[0]);
  }
  state.counters["simulated_s"] = r[1];
  state.counters["plan_s"] = r[2];
  state.SetLabel(tandem::sim::to_string(algorithm));
}

BENCHMARK(BM_PlatformBuild)->Arg(1024)->Arg(4096)->Arg(16384)->UseManualTime()->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK(BM_WorldAllReduce)
    ->Args({1024, static_cast<int64_t>(Algorithm::Ring)})
    ->Args({4096, static_cast<int64_t>(Algorithm::Ring)})
    ->Args({16384, static_cast<int64_t>(Algorithm::Ring)})
    ->Args({16384, static_cast<int64_t>(Algorithm::Hierarchical)})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
