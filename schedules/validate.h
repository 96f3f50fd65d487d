#pragma once
// Validation of a schedule against the IR's semantics (core/schedule.h): every issue names the
// rank, the action (its position and description) and the microbatch.
#include <string>
#include <vector>

#include "core/schedule.h"

namespace tandem {

enum class IssueKind {
  Structure,      // ids out of range, inconsistent layout, action on the wrong rank/chunk
  MissingWork,    // a Forward/Backward/BackwardWeight that must exist does not
  DuplicateWork,  // an action appears twice
  UnmatchedComm,  // a send without its receive or the reverse, or a message that is not needed
  Deadlock,       // a cycle: some rank blocks forever (e.g. a receive ordered before its send)
  MessageOrder,   // warning: messages between two ranks are received in another order than sent
};

const char* to_string(IssueKind kind);

struct ValidationIssue {
  IssueKind kind = IssueKind::Structure;
  int rank = -1;          // -1 when the issue is not tied to one rank
  int action_index = -1;  // position in schedule.actions[rank], -1 when none
  int microbatch = -1;
  std::string message;    // complete sentence naming rank, action and microbatch
};

struct ValidationReport {
  std::vector<ValidationIssue> errors;
  std::vector<ValidationIssue> warnings;
  // [rank] most (microbatch, chunk) activations alive at once, counted in program order.
  std::vector<int> peak_live_chunks;
  // [rank] the same weighted by stage_work: units of one microbatch through 1/p of the model.
  std::vector<double> peak_activations;

  bool ok() const { return errors.empty(); }
  // Errors first, then warnings, at most max_lines lines ("... and N more").
  std::string summary(size_t max_lines = 20) const;
};

ValidationReport validate_schedule(const Schedule& schedule);

// Peak live activations per rank in program order (also used by the analysis): a (mb, chunk) is
// live from its Forward to its BackwardWeight, or to its Backward when that is the full one.
void peak_activations(const Schedule& schedule, std::vector<int>& chunks, std::vector<double>& weighted);

}  // namespace tandem
