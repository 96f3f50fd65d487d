#pragma once
// Megatron-Core's batch-level overlap of expert-parallel communication
// (--overlap-moe-expert-parallel-comm, Megatron-Core 0.14): in the steady state of a 1F1B-style
// schedule every forward that is followed by the backward of another microbatch runs with it as
// one overlapped unit (Action::fused_with_next, as DualPipe's F&B pairs), so that one
// microbatch's dispatch/combine all-to-all hides behind the other's attention and expert compute.
//
//   a rank's compute order   ... F(a) B(b) F(c) B(d) ...   becomes   ... [F(a) B(b)] [F(c) B(d)] ...
//   one stage (no pipeline)  F0 B0 F1 B1 F2 B2            becomes   F0 [F1 B0] [F2 B1] B2
//
// Pairs are formed greedily in program order, never from a forward and the backward of the same
// (microbatch, chunk); the receives of both members then come before the unit and the sends of
// both after it (make_schedule), which can deadlock where a schedule keeps a backward waiting for
// a message its own forward sends: the caller validates the result.
#include "core/schedule.h"

namespace tandem {

// The schedule with its steady-state forward/backward pairs fused; `pairs` receives their count.
Schedule pair_steady_state(const Schedule& schedule, int* pairs = nullptr);

}  // namespace tandem
