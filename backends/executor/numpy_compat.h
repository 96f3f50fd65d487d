#pragma once
// The few numpy behaviours that Megatron's dataset index builders depend on, reproduced bit for
// bit so that tandem draws the same sample order as Megatron for the same inputs.
//
// NumpyRandomState: numpy.random.RandomState(seed) with an integer seed (the legacy MT19937
// seeding, Knuth's init_genrand, which is also what std::mt19937(seed) does) and its
// RandomState.shuffle of a 1-D array: for i = n-1 down to 1, j = random_interval(i), swap
// x[i], x[j]. random_interval(max) draws masked values until one is <= max: the mask is the
// smallest all-ones bit pattern >= max; 32-bit draws when max < 2^32, else 64-bit draws made of
// two 32-bit outputs (the first is the high word, as numpy's mt19937_next64 does).
//
// numpy_sum: numpy.sum of a float64 array (pairwise summation: fewer than 8 elements add left
// to right; up to 128 use eight interleaved accumulators; larger arrays split in two, the first
// half a multiple of 8). Megatron normalises --split and blend weights with it.
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace tandem::exec {

class NumpyRandomState {
 public:
  // seed in [0, 2^32 - 1] (numpy refuses others; callers check and name the flag).
  explicit NumpyRandomState(uint32_t seed) : mt_(seed) {}

  uint32_t next_uint32() { return static_cast<uint32_t>(mt_()); }
  uint64_t next_uint64() {
    const uint64_t hi = next_uint32();
    return hi << 32 | next_uint32();
  }

  // Uniform integer in [0, max] by masked rejection (numpy's legacy random_interval).
  uint64_t random_interval(uint64_t max) {
    if (max == 0) return 0;
    uint64_t mask = max;
    for (int shift = 1; shift <= 32; shift *= 2) mask |= mask >> shift;
    uint64_t value = 0;
    if (max <= 0xffffffffull) {
      while ((value = (next_uint32() & mask)) > max) {
      }
    } else {
      while ((value = (next_uint64() & mask)) > max) {
      }
    }
    return value;
  }

  // RandomState.shuffle of a 1-D array, in place.
  template <typename T>
  void shuffle(std::vector<T>& x) {
    for (size_t i = x.size(); i > 1; --i) {
      const size_t j = static_cast<size_t>(random_interval(i - 1));
      std::swap(x[i - 1], x[j]);
    }
  }

 private:
  std::mt19937 mt_;
};

// numpy.sum(a) for a float64 array a[0, n).
double numpy_sum(const double* a, size_t n);
inline double numpy_sum(const std::vector<double>& a) { return numpy_sum(a.data(), a.size()); }

// Megatron's normalize(): w / numpy.sum(w), element by element.
std::vector<double> numpy_normalize(const std::vector<double>& w);

}  // namespace tandem::exec
