#pragma once
// Shared helpers for the backends/sim tests.
//
// SimGrid 3.32 allows one engine per process (a second one keeps the first one's clock), so every
// test that builds a Platform does it in a forked child through run_isolated() and gets its
// results back through a pipe. Assertions are made in the parent.
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/job.h"

namespace tandem::sim::testing {

// An H100-like node and fabric: 8 GPUs on NVLink 4, 8 x 400 Gb/s NICs, full fat tree.
inline ClusterSpec h100_cluster() {
  ClusterSpec c;
  c.name = "test-h100";
  c.gpu.name = "H100";
  c.gpu.peak_flops_bf16 = 989.5e12;  // FLOP/s
  c.gpus_per_node = 8;
  c.nvlink_bandwidth = 450e9;  // bytes/s per direction
  c.nvlink_latency = 2e-6;     // s
  c.nics_per_node = 8;
  c.nic_bandwidth = 50e9;      // bytes/s (400 Gb/s)
  c.nic_latency = 3e-6;        // s
  c.nodes_per_leaf = 32;
  c.oversubscription = 1.0;
  return c;
}

inline std::string encode(const std::vector<double>& values) {
  std::string out(values.size() * sizeof(double), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

inline std::vector<double> decode(const std::string& bytes) {
  std::vector<double> values(bytes.size() / sizeof(double));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), values.size() * sizeof(double));
  return values;
}

inline std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " ") + p;
  return out;
}

// Runs `body` in a child process and returns the string it produced. Throws when the child fails.
inline std::string run_isolated(const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    int code = 0;
    std::string out;
    try {
      out = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child failed: %s\n", e.what());
      code = 2;
    }
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    close(fds[1]);
    std::fflush(nullptr);
    _exit(code);  // skip the parent's static destructors and GoogleTest teardown in the child
  }
  close(fds[1]);
  std::string out;
  char buffer[65536];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof(buffer))) > 0;) out.append(buffer, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("simulation child process failed (status " + std::to_string(status) + ")");
  return out;
}

}  // namespace tandem::sim::testing
