// Eight-lane fp32 vectors (AVX2 with the project's -march) and the elementwise math of the
// bf16 kernels: exp, bf16 loads and round-to-nearest-even stores. The fp32 kernels keep libm
// (their results are compared bit for bit with earlier releases); bf16 kernels round their
// outputs to 8 significant bits, far above these functions' error.
#pragma once

#include <cstdint>
#include <cstring>

namespace magix::cpu::vec {

using F8 = float __attribute__((vector_size(32)));
using I8 = int32_t __attribute__((vector_size(32)));
using U8 = uint32_t __attribute__((vector_size(32)));
using H8 = uint16_t __attribute__((vector_size(16)));

inline F8 load(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, F8 v) {
  std::memcpy(p, &v, sizeof v);
}

inline F8 splat(float x) {
  return F8{} + x;
}

// Eight bf16 values widened to fp32 (exact).
inline F8 load_bf16(const uint16_t* p) {
  H8 h;
  std::memcpy(&h, p, sizeof h);
  const U8 w = __builtin_convertvector(h, U8) << 16;
  F8 v;
  std::memcpy(&v, &w, sizeof v);
  return v;
}

// Eight fp32 values rounded to bf16, nearest even; NaN stays a quiet NaN (as float_to_bf16).
inline void store_bf16(uint16_t* p, F8 v) {
  U8 bits;
  std::memcpy(&bits, &v, sizeof bits);
  const U8 rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const U8 nan = (bits >> 16) | 0x0040u;
  const U8 out = (bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
  const H8 h = __builtin_convertvector(out, H8);
  std::memcpy(p, &h, sizeof h);
}

// exp(x), within 4 ulp for x in [-87.3, 88.3]; 0 below (x = -inf gives 0), 2.1e38 above (finite,
// so that x / (1 + exp(-x)) stays a number). Cody-Waite reduction x = n ln2 + r with
// |r| <= ln2 / 2, a degree-6 polynomial for e^r, 2^n from the exponent bits.
inline F8 exp(F8 x) {
  const F8 lo = splat(-87.3f), hi = splat(88.3f);
  const F8 xc = x < lo ? lo : (x > hi ? hi : x);
  const F8 n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  F8 r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  F8 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I8 bits = (__builtin_convertvector(n, I8) + 127) << 23;
  F8 two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return x < lo ? F8{} : p * two_n;
}

inline float sum(F8 v) {
  float s = 0;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

inline float max(F8 v) {
  float m = v[0];
  for (int i = 1; i < 8; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

}  // namespace magix::cpu::vec
