#pragma once
// Megatron-LM flags accepted and listed as ignored (core/megatron_flags_accepted.cpp).
#include <vector>

#include "core/job_fields.h"

namespace tandem {

const std::vector<FlagAlias>& accepted_megatron_flags();

}  // namespace tandem
