#pragma once
// Deterministic, platform-independent random numbers for initial weights and synthetic data:
// a 64-bit name hash (FNV-1a), splitmix64 streams and Box-Muller normals. The same (seed, name)
// gives the same full tensor on every machine and every layout.
#include <cmath>
#include <cstdint>
#include <string_view>

namespace tandem::exec {

inline uint64_t fnv1a64(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Seed of the stream that draws tensor `name` under the run's seed.
inline uint64_t stream_seed(int64_t seed, std::string_view name) {
  uint64_t s = fnv1a64(name) ^ (static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull);
  return splitmix64(s);
}

class NormalStream {
 public:
  explicit NormalStream(uint64_t seed) : state_(seed) {}
  double uniform() {   // (0, 1)
    return (static_cast<double>(splitmix64(state_) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  }
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = uniform(), u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1)), t = 6.283185307179586 * u2;
    spare_ = r * std::sin(t);
    has_spare_ = true;
    return r * std::cos(t);
  }
  uint64_t next() { return splitmix64(state_); }

 private:
  uint64_t state_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace tandem::exec
