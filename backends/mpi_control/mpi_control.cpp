#include "backends/mpi_control/mpi_control.h"

#include <limits>

#include "core/check.h"

namespace tandem::mpi {

int count(int64_t v, const char* what) {
  TANDEM_CHECK_MSG(v >= 0 && v <= std::numeric_limits<int>::max(), what << " = " << v << " exceeds an MPI count");
  return static_cast<int>(v);
}

std::vector<int64_t> all_to_all_counts(MPI_Comm comm, int64_t group_size, std::span<const int64_t> in) {
  TANDEM_CHECK(group_size > 0 && static_cast<int64_t>(in.size()) % group_size == 0);
  std::vector<int64_t> out(in.size());
  const int m = count(static_cast<int64_t>(in.size()) / group_size, "count block");
  MPI_Alltoall(in.data(), m, MPI_INT64_T, out.data(), m, MPI_INT64_T, comm);
  return out;
}

std::vector<double> world_sum(std::span<const double> values) {
  std::vector<double> out(values.begin(), values.end());
  MPI_Allreduce(MPI_IN_PLACE, out.data(), count(static_cast<int64_t>(out.size()), "sum count"), MPI_DOUBLE, MPI_SUM,
                MPI_COMM_WORLD);
  return out;
}

namespace {

// Lengths and offsets of every rank's text; `all` true: on every rank, else at rank 0 only.
std::vector<std::string> gather_text(const std::string& text, bool all) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int len = count(static_cast<int64_t>(text.size()), "text length");
  std::vector<int> lens(static_cast<size_t>(size)), offsets(static_cast<size_t>(size));
  if (all) MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
  else MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  int64_t total = 0;
  for (size_t i = 0; i < lens.size(); ++i) {
    offsets[i] = count(total, "text offset");
    total += lens[i];
  }
  const bool here = all || rank == 0;
  std::string joined(here ? static_cast<size_t>(total) : 0, '\0');
  if (all)
    MPI_Allgatherv(text.data(), len, MPI_CHAR, joined.data(), lens.data(), offsets.data(), MPI_CHAR, MPI_COMM_WORLD);
  else
    MPI_Gatherv(text.data(), len, MPI_CHAR, joined.data(), lens.data(), offsets.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
  std::vector<std::string> out;
  if (!here) return out;
  for (size_t i = 0; i < lens.size(); ++i)
    out.push_back(joined.substr(static_cast<size_t>(offsets[i]), static_cast<size_t>(lens[i])));
  return out;
}

}  // namespace

std::vector<std::string> gather_to_root(const std::string& text) { return gather_text(text, false); }

std::vector<std::string> all_gather_text(const std::string& text) { return gather_text(text, true); }

}  // namespace tandem::mpi
