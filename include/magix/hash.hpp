// The two hash primitives every reproducible random stream in magix is built from (parameter
// init, LoRA init, sampling, data shuffling): documented so that other tools can reproduce them.
#pragma once

#include <cstdint>
#include <string_view>

namespace magix {

// SplitMix64 (Steele et al.): x + golden-ratio increment, then the finaliser. A bijection of
// 64-bit words that mixes every input bit.
constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// FNV-1a 64 of a string's bytes (names -> seeds).
constexpr uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace magix
