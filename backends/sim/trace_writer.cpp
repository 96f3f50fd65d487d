// Chrome-trace and op-trace files of a simulation (trace_writer.h).
#include "backends/sim/trace_writer.h"

#include <cstdio>
#include <fstream>
#include <memory>

#include "core/check.h"

namespace tandem::sim {
namespace {

constexpr int kStreamCount = 7;

std::ofstream open_for_writing(const std::string& path, const char* field) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw_field_error(field, path, "cannot open the file for writing");
  return out;
}

// JSON string body: the labels are short identifiers, but escape what JSON requires anyway.
std::string escaped(const char* text) {
  std::string out;
  for (const char* c = text; *c != '\0'; ++c) {
    if (*c == '"' || *c == '\\') out += '\\';
    if (static_cast<unsigned char>(*c) < 0x20) continue;
    out += *c;
  }
  return out;
}

void write_metadata(std::ostream& out, const ParallelGrid& grid, int64_t rank, bool& first) {
  const DenseCoord c = grid.dense_coord(rank);
  char line[320];
  std::snprintf(line, sizeof(line),
                "%s{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%lld,\"args\":{\"name\":\"rank %lld (tp %lld, cp %lld, "
                "dp %lld, pp %lld)\"}},\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%lld,\"args\":{"
                "\"sort_index\":%lld}}",
                first ? "" : ",\n", static_cast<long long>(rank), static_cast<long long>(rank),
                static_cast<long long>(c.tp), static_cast<long long>(c.cp), static_cast<long long>(c.dp),
                static_cast<long long>(c.pp), static_cast<long long>(rank), static_cast<long long>(rank));
  out << line;
  first = false;
  for (int s = 0; s < kStreamCount; ++s) {
    std::snprintf(line, sizeof(line),
                  ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%lld,\"tid\":%d,\"args\":{\"name\":\"%s\"}}",
                  static_cast<long long>(rank), s, to_string(static_cast<StreamKind>(s)));
    out << line;
  }
}

// x.peer already renamed for `rank`.
void write_event(std::ostream& out, int64_t rank, const Instruction& x, const InstructionTime& t) {
  const std::string name = escaped(x.site != Site::None ? to_string(x.site) : to_string(x.kind));
  char line[512];
  int n = std::snprintf(line, sizeof(line),
                        ",\n{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%lld,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,"
                        "\"args\":{\"phase\":\"%s\"",
                        name.c_str(), to_string(x.kind), static_cast<long long>(rank),
                        static_cast<int>(x.stream), t.start * 1e6, (t.end - t.start) * 1e6, to_string(x.phase));
  auto append = [&](const char* key, long long value) {
    if (n > 0 && static_cast<size_t>(n) < sizeof(line))
      n += std::snprintf(line + n, sizeof(line) - static_cast<size_t>(n), ",\"%s\":%lld", key, value);
  };
  if (x.layer >= 0) append("layer", x.layer);
  if (x.microbatch >= 0) append("mb", x.microbatch);
  if (x.chunk >= 0) append("chunk", x.chunk);
  if (is_communication(x.kind)) {
    append("bytes", static_cast<long long>(x.bytes));
    if (x.peer >= 0) append("peer", x.peer);
  }
  out << line;
  if (is_communication(x.kind) && x.peer < 0) out << ",\"group\":\"" << to_string(x.group) << "\"";
  out << "}}";
}

}  // namespace

void write_chrome_trace(const std::string& path, const ParallelGrid& grid, const std::vector<PlayedRank>& played,
                        const std::vector<RankOutcome>& outcomes) {
  TANDEM_CHECK_MSG(played.size() == outcomes.size(), "one outcome per played rank");
  std::ofstream out = open_for_writing(path, "trace_path");
  out << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  bool first = true;
  for (size_t r = 0; r < played.size(); ++r) {
    const RankProgram& program = *played[r].program;
    const int64_t rank = played[r].rank;
    const std::vector<InstructionTime>& timeline = outcomes[r].timeline;
    TANDEM_CHECK_MSG(timeline.size() == program.instructions.size(), "trace needs ExecutorOptions::record_timeline");
    write_metadata(out, grid, rank, first);
    for (size_t i = 0; i < program.instructions.size(); ++i) {
      Instruction x = program.instructions[i];
      if (is_memory(x.kind) || (timeline[i].end <= timeline[i].start && !is_communication(x.kind))) continue;
      if (x.peer >= 0) x.peer = rename_peer(grid, program.rank, rank, x.peer);
      write_event(out, rank, x, timeline[i]);
    }
  }
  out << "\n]}\n";
  if (!out) throw_field_error("trace_path", path, "writing failed");
}

void write_op_trace(const std::string& path, const ParallelGrid& grid, const std::vector<PlayedRank>& played) {
  std::ofstream out = open_for_writing(path, "op_trace_path");
  for (const PlayedRank& p : played) {
    out << "# rank " << p.rank << "\n";
    for (Instruction x : p.program->instructions) {
      if (x.peer >= 0) x.peer = rename_peer(grid, p.program->rank, p.rank, x.peer);
      out << op_trace_line(x) << "\n";
    }
  }
  if (!out) throw_field_error("op_trace_path", path, "writing failed");
}

}  // namespace tandem::sim
