#pragma once
// Host control data over MPI, shared by the CPU (MpiCommunicator) and CUDA (NcclCommunicator)
// backends: the parts of exec::Communicator that carry host values rather than device tensors.
#include <mpi.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem::mpi {

// v as an MPI count; a check failure naming `what` when it does not fit an int.
int count(int64_t v, const char* what);

// in [group_size * m]: block i goes to member i of `comm`; returns block i from member i.
std::vector<int64_t> all_to_all_counts(MPI_Comm comm, int64_t group_size, std::span<const int64_t> in);
// Element-wise sum over MPI_COMM_WORLD.
std::vector<double> world_sum(std::span<const double> values);
// Every rank's text at rank 0 of MPI_COMM_WORLD (index = rank); other ranks get an empty list.
std::vector<std::string> gather_to_root(const std::string& text);
// Every rank's text on every rank of MPI_COMM_WORLD (index = rank).
std::vector<std::string> all_gather_text(const std::string& text);

}  // namespace tandem::mpi
