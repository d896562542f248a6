// Scalar and bulk conversions between f32 and the 16-bit float formats.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

namespace magix {

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest, ties to even; NaN stays a quiet NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);  // round to nearest even

void bf16_to_float(std::span<const uint16_t> in, std::span<float> out);
void float_to_bf16(std::span<const float> in, std::span<uint16_t> out);
void f16_to_float(std::span<const uint16_t> in, std::span<float> out);

}  // namespace magix
