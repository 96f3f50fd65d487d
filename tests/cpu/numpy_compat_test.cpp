// tandem's numpy-compatible generator, shuffle and sum against values printed by numpy 1.24
// (numpy.random.RandomState(seed)._bit_generator.random_raw, RandomState.shuffle, numpy.sum);
// gpt_sample_order_test.py compares many more draws with numpy at run time.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "backends/executor/gpt_dataset.h"
#include "backends/executor/numpy_compat.h"
#include "core/check.h"

namespace tandem::exec {
namespace {

TEST(NumpyRandomState, RawOutputsEqualNumpys) {
  NumpyRandomState zero(0), seeded(1234);
  EXPECT_EQ(zero.next_uint32(), 2357136044u);
  EXPECT_EQ(zero.next_uint32(), 2546248239u);
  EXPECT_EQ(zero.next_uint32(), 3071714933u);
  EXPECT_EQ(seeded.next_uint32(), 822569775u);
  EXPECT_EQ(seeded.next_uint32(), 2137449171u);
  EXPECT_EQ(seeded.next_uint32(), 2671936806u);
}

TEST(NumpyRandomState, ShuffleEqualsNumpys) {
  std::vector<int64_t> x(10);
  std::iota(x.begin(), x.end(), int64_t{0});
  NumpyRandomState(1234).shuffle(x);
  EXPECT_EQ(x, (std::vector<int64_t>{7, 2, 9, 1, 0, 8, 4, 5, 6, 3}));
}

TEST(NumpySum, PairwiseSummationEqualsNumpys) {
  EXPECT_EQ(numpy_sum({0.1, 0.2, 0.3}), 0.6000000000000001);
  std::vector<double> c(300);
  for (size_t i = 0; i < c.size(); ++i) c[i] = 1.0 / double(i + 1);
  EXPECT_EQ(numpy_sum(c), 6.282663880299504);   // left-to-right gives ...502
  EXPECT_EQ(numpy_normalize({969, 30, 1}), (std::vector<double>{0.969, 0.03, 0.001}));
}

TEST(MegatronSplit, BookendsAndRounding) {
  const auto m = parse_split("969,30,1");
  ASSERT_TRUE(m[0].present && m[1].present && m[2].present);
  EXPECT_EQ(split_sequences(m[0], 1000), (std::pair<int64_t, int64_t>{0, 969}));
  EXPECT_EQ(split_sequences(m[2], 1000), (std::pair<int64_t, int64_t>{999, 1000}));
  const auto half = parse_split("1,1");   // 0.5 * 5 = 2.5 rounds to even: 2
  EXPECT_EQ(split_sequences(half[0], 5), (std::pair<int64_t, int64_t>{0, 2}));
  EXPECT_FALSE(half[2].present);
  EXPECT_THROW(parse_split("a,b"), UserError);
}

}  // namespace
}  // namespace tandem::exec
