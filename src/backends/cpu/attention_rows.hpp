// Row kernels of the CPU attention (attention.cpp): exp, max and dot products over rows of a
// score block, and the bf16 rounding of eight lanes, on GCC vector types (AVX2 with the
// project's -march, two SSE halves without). Internal to attention.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "magix/dtype_convert.hpp"

namespace magix::cpu::attention_rows {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Eight floats (int32s) in one register: AVX2 with the project's -march, two SSE halves without.
using Vec8 = float __attribute__((vector_size(32)));
using Int8 = int32_t __attribute__((vector_size(32)));

inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, Vec8 v) {
  std::memcpy(p, &v, sizeof v);
}

// exp(x) in float, ~1 ulp for x in [-87, 88]; exactly 0 below -87.33 (so -inf -> 0) where expf
// would give a denormal (< 1.2e-38, negligible against a softmax sum >= 1). Callers pass
// x <= ~0 (scores minus the row max or the lse). Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2 (n rounded with the 1.5 * 2^23 trick), degree-6 polynomial for e^r (the Cephes
// expf coefficients), 2^n from the exponent bits. One body for T = float and T = Vec8.
template <class T, class I>
inline T exp_neg(T x) {
  const T lo = T{} - 87.0f, hi = T{} + 88.0f;
  const T xc = x < lo ? lo : (x > hi ? hi : x);
  const T n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  T r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  T p = T{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  I bits;
  if constexpr (std::is_same_v<T, float>) {
    bits = (static_cast<int32_t>(n) + 127) << 23;
  } else {
    bits = (__builtin_convertvector(n, I) + 127) << 23;
  }
  T two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return x < -87.33f ? T{} : p * two_n;
}

// max(x[0..n)), -inf for n = 0.
inline float row_max(const float* x, int64_t n) {
  Vec8 m8 = Vec8{} + kNegInf;
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const Vec8 v = load8(x + c);
    m8 = v > m8 ? v : m8;
  }
  float m = kNegInf;
  for (int j = 0; j < 8; ++j) m = std::max(m, m8[j]);
  for (; c < n; ++c) m = std::max(m, x[c]);
  return m;
}

// bf16(x) per lane, bit-identical to float_to_bf16: round to nearest even on the integer bits,
// NaN -> quiet NaN. Stored to p[0..8).
inline void store_bf16x8(uint16_t* p, Vec8 x) {
  using UInt8 = uint32_t __attribute__((vector_size(32)));
  using U16x8 = uint16_t __attribute__((vector_size(16)));
  UInt8 bits;
  std::memcpy(&bits, &x, sizeof bits);
  const UInt8 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const UInt8 quiet = (bits >> 16) | 0x40u;
  const U16x8 h = __builtin_convertvector(x != x ? quiet : rounded, U16x8);
  std::memcpy(p, &h, sizeof h);
}

// e[c] = exp(x[c] - shift) for c < n, written to x[c] (kF32) and/or as bf16 to x16[c] (kBf16);
// returns the fp32 sum of the e[c].
template <bool kF32, bool kBf16Out>
inline float exp_shifted(float* x, int64_t n, float shift, uint16_t* x16) {
  Vec8 s8{};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const Vec8 e = exp_neg<Vec8, Int8>(load8(x + c) - shift);
    if constexpr (kF32) store8(x + c, e);
    if constexpr (kBf16Out) store_bf16x8(x16 + c, e);
    s8 += e;
  }
  float sum = 0.0f;
  for (int j = 0; j < 8; ++j) sum += s8[j];
  for (; c < n; ++c) {
    const float e = exp_neg<float, int32_t>(x[c] - shift);
    if constexpr (kF32) x[c] = e;
    if constexpr (kBf16Out) x16[c] = float_to_bf16(e);
    sum += e;
  }
  return sum;
}

// rowsum(a ∘ b) over n in fp32: in order for fp32; for bf16 (exact products) in 8 lanes, then
// the lanes in order.
inline float row_dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
  for (int64_t d = 0; d < n; ++d) sum += a[d] * b[d];
  return sum;
}
inline float row_dot(const uint16_t* a, const uint16_t* b, int64_t n) {
  using U16x8 = uint16_t __attribute__((vector_size(16)));
  auto widen8 = [](const uint16_t* p) {
    U16x8 h;
    std::memcpy(&h, p, sizeof h);
    const Int8 bits = __builtin_convertvector(h, Int8) << 16;
    Vec8 x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
  };
  Vec8 s8{};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) s8 += widen8(a + d) * widen8(b + d);
  float sum = 0.0f;
  for (int j = 0; j < 8; ++j) sum += s8[j];
  for (; d < n; ++d) sum += bf16_to_float(a[d]) * bf16_to_float(b[d]);
  return sum;
}

}  // namespace magix::cpu::attention_rows
