// simulate() in a child process, and the JSON round trip it needs (simulator.h).
#include <sys/types.h>
#include <poll.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/sim/simulator.h"
#include "core/check.h"
#include "models/accounting.h"

namespace tandem::sim {
namespace {

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string out;
  char buffer[65536];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) out.append(buffer, static_cast<size_t>(n));
  return out;
}

// A result with the fields result_to_json leaves out (host time, counts).
nlohmann::json answer_of(const SimResult& r) {
  nlohmann::json answer;
  answer["result"] = result_to_json(r);
  answer["wall_seconds"] = r.wall_seconds;
  answer["counts"] = {{"instructions", r.counts.instructions},
                      {"network_operations", r.counts.network_operations},
                      {"flows", r.counts.flows},
                      {"ghost_flows", r.counts.ghost_flows},
                      {"analytic_collectives", r.counts.analytic_collectives}};
  return answer;
}

SimResult result_of(const nlohmann::json& answer) {
  SimResult r = result_from_json(answer.at("result"));
  r.wall_seconds = answer.at("wall_seconds").get<double>();
  const nlohmann::json& c = answer.at("counts");
  r.counts = {c.at("instructions").get<int64_t>(), c.at("network_operations").get<int64_t>(),
              c.at("flows").get<int64_t>(), c.at("ghost_flows").get<int64_t>(),
              c.at("analytic_collectives").get<int64_t>()};
  return r;
}

WanReport wan_from_json(const nlohmann::json& j) {
  WanReport w;
  w.placement = j.at("dc_placement").get<std::string>();
  w.bytes = j.at("wan_bytes").get<double>();
  w.exposed_s = j.at("wan_exposed_s").get<double>();
  if (j.contains("wan_cost_s")) {
    w.ideal_iteration_s = j.at("wan_ideal_iteration_time_s").get<double>();
    w.cost_s = j.at("wan_cost_s").get<double>();
  }
  for (const auto& [key, bytes] : j.at("wan_bytes_by_direction").items()) {
    const size_t arrow = key.find("->");
    const auto from = static_cast<size_t>(std::stoll(key.substr(0, arrow)));
    const auto to = static_cast<size_t>(std::stoll(key.substr(arrow + 2)));
    const size_t d = std::max(from, to) + 1;
    if (w.bytes_by_direction.size() < d) w.bytes_by_direction.resize(d);
    for (auto& row : w.bytes_by_direction) row.resize(std::max(row.size(), d), 0.0);
    w.bytes_by_direction[from][to] = bytes.get<double>();
  }
  return w;
}

// The child's whole answer: the result or the error.
std::string child_answer(const Job& job, const SimOptions& options) {
  SimOutcome outcome;
  try {
    outcome.result = simulate(job, options);
  } catch (...) {
    outcome.error = std::current_exception();
  }
  return outcome_to_text(outcome);
}

// Waits for the child and turns its answer into a result (or rethrows its error).
SimResult finish_child(pid_t pid, const std::string& text) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || text.empty())
    throw std::runtime_error("simulate: the simulation process failed (status " + std::to_string(status) + ")");
  SimOutcome outcome = outcome_from_text(text);
  if (outcome.error) std::rethrow_exception(outcome.error);
  if (!outcome.result) throw std::runtime_error("simulate: the simulation process sent no result");
  return std::move(*outcome.result);
}

}  // namespace

std::string outcome_to_text(const SimOutcome& outcome) {
  nlohmann::json answer;
  if (outcome.result) answer = answer_of(*outcome.result);
  if (outcome.timed_out) answer["timed_out"] = true;
  if (outcome.error) {
    try {
      std::rethrow_exception(outcome.error);
    } catch (const UserError& e) {
      answer["user_error"] = e.what();
    } catch (const std::exception& e) {
      answer["error"] = e.what();
    } catch (...) {
      answer["error"] = "unknown error";
    }
  }
  return answer.dump();
}

SimOutcome outcome_from_text(const std::string& text) {
  const nlohmann::json answer = nlohmann::json::parse(text);
  SimOutcome outcome;
  outcome.timed_out = answer.value("timed_out", false);
  if (answer.contains("user_error")) outcome.error = std::make_exception_ptr(UserError(answer["user_error"].get<std::string>()));
  else if (answer.contains("error")) outcome.error = std::make_exception_ptr(std::runtime_error(answer["error"].get<std::string>()));
  else if (answer.contains("result")) outcome.result = result_of(answer);
  return outcome;
}

Breakdown breakdown_from_json(const nlohmann::json& b) {
  return {b.at("compute").get<double>(), b.at("tp_comm").get<double>(),  b.at("cp_comm").get<double>(),
          b.at("ep_comm").get<double>(), b.at("pp_comm").get<double>(),  b.at("dp_comm").get<double>(),
          b.at("pipeline_bubble").get<double>(), b.at("optimizer").get<double>()};
}

SimResult result_from_json(const nlohmann::json& j) {
  SimResult r;
  r.iteration_time_s = j.at("iteration_time_s").get<double>();
  r.tokens_per_s = j.at("tokens_per_s").get<double>();
  r.model_tflops_per_gpu = j.at("model_tflops_per_gpu").get<double>();
  r.hardware_tflops_per_gpu = j.at("hardware_tflops_per_gpu").get<double>();
  r.mfu = j.at("mfu").get<double>();
  r.hfu = j.at("hfu").get<double>();
  r.peak_memory_gib = j.at("peak_memory_gib").get<double>();
  r.oom = j.at("oom").get<bool>();
  r.breakdown = breakdown_from_json(j.at("breakdown"));
  r.critical_rank = j.at("critical_rank").get<int64_t>();
  r.ranks_played = j.at("ranks_played").get<int64_t>();
  r.symmetry_classes = j.at("symmetry_classes").get<int64_t>();
  r.symmetry_reduced = j.at("symmetry_reduced").get<bool>();
  for (const nlohmann::json& rank : j.at("ranks")) {
    RankResult rr;
    rr.rank = rank.at("rank").get<int64_t>();
    rr.busy_s = rank.at("busy_s").get<double>();
    rr.peak_memory_bytes = rank.at("peak_memory_gib").get<double>() * kBytesPerGiB;
    rr.symmetry_class = rank.at("symmetry_class").get<int64_t>();
    rr.finish_s = rank.value("finish_s", 0.0);
    if (rank.contains("breakdown")) rr.breakdown = breakdown_from_json(rank.at("breakdown"));
    rr.peer_wait_s = rank.value("peer_wait_s", 0.0);
    r.ranks.push_back(rr);
  }
  for (const nlohmann::json& w : j.value("waits", nlohmann::json::array())) {
    WaitRow row;
    row.who = w.at("who").get<std::string>();
    row.rank = w.at("rank").get<int64_t>();
    row.count = w.at("count").get<int64_t>();
    double* fields[] = {&row.busy_s, &row.compute_s, &row.pipeline_s, &row.collectives_s, &row.data_parallel_s,
                        &row.optimizer_s, &row.peer_wait_s, &row.idle_at_end_s};
    const char* keys[] = {"busy_s", "compute_s", "pipeline_s", "collectives_s", "data_parallel_s",
                          "optimizer_s", "peer_wait_s", "idle_at_end_s"};
    for (size_t k = 0; k < std::size(keys); ++k) *fields[k] = w.at(keys[k]).get<double>();
    r.waits.push_back(row);
  }
  if (j.contains("sensitivity_busy_s")) r.sensitivity_busy_s = j.at("sensitivity_busy_s").get<std::vector<double>>();
  r.stack = j.value("stack", std::string());
  r.notes = j.at("notes").get<std::vector<std::string>>();
  if (j.contains("moe_routing")) r.moe_routing = summary_from_json(j.at("moe_routing"));
  if (j.contains("wan_bytes")) r.wan = wan_from_json(j);
  return r;
}

namespace {

struct Child {
  pid_t pid = -1;
  int fd = -1;
  size_t index = 0;
  std::string text;
};

Child start_child(const SimRequest& request, size_t index) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("simulate: cannot create a pipe");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    throw std::runtime_error("simulate: cannot fork");
  }
  if (pid == 0) {
    close(fds[0]);
    write_all(fds[1], child_answer(*request.job, request.options));
    close(fds[1]);
    std::fflush(nullptr);
    _exit(0);  // a forked child: leave without running the parent's atexit handlers or destructors
  }
  close(fds[1]);
  Child c;
  c.pid = pid;
  c.fd = fds[0];
  c.index = index;
  return c;
}

}  // namespace

SimResult simulate_in_subprocess(const Job& job, const SimOptions& options) {
  const Child c = start_child(SimRequest{&job, options}, 0);
  const std::string text = read_all(c.fd);
  close(c.fd);
  return finish_child(c.pid, text);
}

std::vector<SimOutcome> simulate_each_in_subprocesses(const std::vector<SimRequest>& requests, int parallel,
                                                      double timeout_s, const std::function<void(size_t)>& on_done) {
  using Clock = std::chrono::steady_clock;
  std::vector<SimOutcome> outcomes(requests.size());
  std::vector<Child> running;
  std::vector<Clock::time_point> started;
  size_t next = 0, finished = 0;
  const auto done_with = [&](size_t k) {
    running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
    started.erase(started.begin() + static_cast<std::ptrdiff_t>(k));
    if (on_done) on_done(++finished);
  };
  while (next < requests.size() || !running.empty()) {
    while (next < requests.size() && static_cast<int>(running.size()) < std::max(1, parallel)) {
      running.push_back(start_child(requests[next], next));
      started.push_back(Clock::now());
      ++next;
    }
    std::vector<pollfd> polls;
    for (const Child& c : running) polls.push_back({c.fd, POLLIN, 0});
    if (poll(polls.data(), polls.size(), timeout_s > 0 ? 200 : -1) < 0) continue;
    for (size_t k = running.size(); k-- > 0;) {
      Child& c = running[k];
      if (!(polls[k].revents & (POLLIN | POLLHUP | POLLERR))) {
        if (timeout_s > 0 && std::chrono::duration<double>(Clock::now() - started[k]).count() > timeout_s) {
          kill(c.pid, SIGKILL);
          waitpid(c.pid, nullptr, 0);
          close(c.fd);
          outcomes[c.index].timed_out = true;
          done_with(k);
        }
        continue;
      }
      char buffer[65536];
      const ssize_t n = read(c.fd, buffer, sizeof(buffer));
      if (n > 0) {
        c.text.append(buffer, static_cast<size_t>(n));
        continue;
      }
      close(c.fd);
      try {
        outcomes[c.index].result = finish_child(c.pid, c.text);
      } catch (...) {
        outcomes[c.index].error = std::current_exception();
      }
      done_with(k);
    }
  }
  return outcomes;
}

std::vector<SimResult> simulate_many_in_subprocesses(const std::vector<SimRequest>& requests, int parallel) {
  std::vector<SimOutcome> outcomes = simulate_each_in_subprocesses(requests, parallel);
  std::vector<SimResult> out;
  for (SimOutcome& o : outcomes) {
    if (o.error) std::rethrow_exception(o.error);
    out.push_back(std::move(*o.result));
  }
  return out;
}

}  // namespace tandem::sim
