// The demos' random stream (src/demo): output i is splitmix64(seed + i · golden-ratio increment).
#pragma once

#include <cstdint>

#include "magix/hash.hpp"

namespace magix::detail {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    const uint64_t z = splitmix64(state_);
    state_ += 0x9e3779b97f4a7c15ull;
    return z;
  }
  // Uniform in [0, n) (Lemire's multiply-shift; n > 0).
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

 private:
  uint64_t state_;
};

}  // namespace magix::detail
