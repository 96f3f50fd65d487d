// The CPU device applies the shape rules it shares with the CUDA device
// (backends/executor/shape_rules.h): a violation throws exec::ShapeError naming the op, the
// operand's shape and the rule, instead of aborting, and leaves the outputs untouched.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backends/cpu/cpu_device.h"
#include "backends/executor/shape_rules.h"

namespace tandem::cpu {
namespace {

using exec::DeviceTensor;
using exec::ShapeError;

// Runs f, expects ShapeError whose message contains every fragment.
template <typename F>
void expect_shape_error(F f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const ShapeError& e) {
    for (const char* frag : fragments) EXPECT_NE(std::string(e.what()).find(frag), std::string::npos) << e.what();
  }
}

TEST(CpuShapeRules, GemmWithMismatchedWeightThrowsNamingOpOperandAndShapes) {
  CpuDevice dev;
  const DeviceTensor x = dev.empty({4, 8}), w = dev.empty({6, 5}), y = dev.empty({4, 5});
  dev.fill(y, 7.0f);
  expect_shape_error([&] { dev.gemm_forward(x, w, {}, exec::WeightLayout::InOut, y); },
                     {"gemm_forward", "w", "[6, 5]", "expected [8, 5]"});
  for (float v : dev.to_host(y)) EXPECT_EQ(v, 7.0f);   // nothing computed
}

TEST(CpuShapeRules, ElementwiseAndCopyNeedEqualCounts) {
  CpuDevice dev;
  expect_shape_error([&] { dev.copy(dev.empty({3, 2}), dev.empty({5})); }, {"copy", "[3, 2]", "[5]", "element count"});
  expect_shape_error([&] { dev.add(dev.empty({4}), dev.empty({4}), dev.empty({3})); }, {"add", "out"});
  expect_shape_error([&] { dev.add_row_vector(dev.empty({3, 5}), dev.empty({4})); }, {"add_row_vector"});
}

TEST(CpuShapeRules, NormsAttentionAndMoeOpsFollowTheSameRules) {
  CpuDevice dev;
  expect_shape_error(
      [&] {
        dev.norm_forward(exec::NormKind::RMSNorm, dev.empty({4, 8}), dev.empty({7}), {}, 1e-5f, dev.empty({4, 8}), {},
                         dev.empty({4}));
      },
      {"rmsnorm_forward", "gamma", "[7]", "expected [8]"});
  expect_shape_error(
      [&] { dev.attention_merge(dev.empty({4, 1, 2, 8}), dev.empty({1, 2, 4}), dev.empty({2, 1, 2, 8}),
                                dev.empty({1, 2, 2}), 3); },
      {"attention_merge", "row0 = 3"});
  exec::PermutationPlan plan;
  plan.tokens = 2;
  plan.topk = 1;
  plan.source = {0, 5};
  expect_shape_error([&] { dev.permute_forward(dev.empty({2, 4}), plan, dev.empty({2, 4})); },
                     {"permute_forward", "source[1] = 5"});
  const std::vector<int64_t> index = {0, 3};
  expect_shape_error([&] { dev.gather_rows(dev.empty({3, 2}), index, dev.empty({2, 2})); },
                     {"gather_rows", "index[1] = 3"});
}

TEST(CpuShapeRules, ValidShapesStillCompute) {
  CpuDevice dev;
  const DeviceTensor a = dev.empty({2, 3}), b = dev.empty({6}), out = dev.empty({3, 2});
  dev.fill(a, 1.0f);
  dev.fill(b, 2.0f);
  dev.add(a, b, out);   // equal counts, any shapes (the rule for elementwise ops)
  for (float v : dev.to_host(out)) EXPECT_EQ(v, 3.0f);
}

}  // namespace
}  // namespace tandem::cpu
