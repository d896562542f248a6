#include "magix/dtype_convert.hpp"

#include <cmath>

namespace magix {

float f16_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&bits, &f, sizeof bits);
      bits |= sign;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t float_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (abs < 0x38800000u) {                        // below the smallest normal (2^-14)
    // Subnormal: round abs * 2^24 to nearest even integer.
    float a;
    std::memcpy(&a, &abs, sizeof a);
    float scaled = std::nearbyint(a * 16777216.0f);  // default rounding mode: ties to even
    return sign | static_cast<uint16_t>(scaled);
  }
  uint32_t rounding = 0xfffu + ((abs >> 13) & 1u);
  abs += rounding;
  return sign | static_cast<uint16_t>(((abs >> 13) - (112u << 10)) & 0xffffu);
}

void bf16_to_float(std::span<const uint16_t> in, std::span<float> out) {
#pragma omp parallel for schedule(static) if (in.size() > (1 << 16))
  for (size_t i = 0; i < in.size(); ++i) out[i] = bf16_to_float(in[i]);
}

void float_to_bf16(std::span<const float> in, std::span<uint16_t> out) {
#pragma omp parallel for schedule(static) if (in.size() > (1 << 16))
  for (size_t i = 0; i < in.size(); ++i) out[i] = float_to_bf16(in[i]);
}

void f16_to_float(std::span<const uint16_t> in, std::span<float> out) {
#pragma omp parallel for schedule(static) if (in.size() > (1 << 16))
  for (size_t i = 0; i < in.size(); ++i) out[i] = f16_to_float(in[i]);
}

}  // namespace magix
