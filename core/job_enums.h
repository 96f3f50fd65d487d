#pragma once
// Parsing of the job's enumerations and list-valued flags, with Megatron's spellings.
#include <string>
#include <vector>

#include "core/job.h"

namespace tandem {

template <class E>
E parse_enum(const std::string& field, const std::string& text);

template <> Normalization parse_enum<Normalization>(const std::string&, const std::string&);
template <> PositionEmbedding parse_enum<PositionEmbedding>(const std::string&, const std::string&);
template <> DType parse_enum<DType>(const std::string&, const std::string&);
template <> Fp8Format parse_enum<Fp8Format>(const std::string&, const std::string&);
template <> RecomputeGranularity parse_enum<RecomputeGranularity>(const std::string&, const std::string&);
template <> RecomputeMethod parse_enum<RecomputeMethod>(const std::string&, const std::string&);
template <> LrDecayStyle parse_enum<LrDecayStyle>(const std::string&, const std::string&);
template <> TokenDispatcher parse_enum<TokenDispatcher>(const std::string&, const std::string&);
template <> RouterScore parse_enum<RouterScore>(const std::string&, const std::string&);
template <> AttentionBackend parse_enum<AttentionBackend>(const std::string&, const std::string&);
template <> MoeRouting parse_enum<MoeRouting>(const std::string&, const std::string&);
template <> DcPlacement parse_enum<DcPlacement>(const std::string&, const std::string&);

// Megatron's --moe-layer-freq: "1" (every layer), "N" (every Nth layer, starting at layer 0), or a
// Python list expression such as "[0,1,1]" or "([0]*3+[1]*58)". Returns a per-layer 0/1 pattern;
// an integer N is returned as {-N} and expanded once the layer count is known.
std::vector<int> parse_moe_layer_freq(const std::string& field, const std::string& text);

}  // namespace tandem
