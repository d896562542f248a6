#include "backends/cpu/matmul_decode.hpp"

#include <cstring>

#include "backends/cpu/matmul.hpp"

namespace magix::cpu {
namespace {

// Eight floats in one register (AVX2 with the project's -march; two SSE halves without).
using Vec8 = float __attribute__((vector_size(32)));

inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// a · b over C floats: four independent 8-wide accumulators, then the tail.
inline float dot(const float* a, const float* b, int64_t C) {
  Vec8 s0{}, s1{}, s2{}, s3{};
  int64_t i = 0;
  for (; i + 32 <= C; i += 32) {
    s0 += load8(a + i) * load8(b + i);
    s1 += load8(a + i + 8) * load8(b + i + 8);
    s2 += load8(a + i + 16) * load8(b + i + 16);
    s3 += load8(a + i + 24) * load8(b + i + 24);
  }
  for (; i + 8 <= C; i += 8) s0 += load8(a + i) * load8(b + i);
  const Vec8 s = (s0 + s1) + (s2 + s3);
  float r = 0;
  for (int k = 0; k < 8; ++k) r += s[k];
  for (; i < C; ++i) r += a[i] * b[i];
  return r;
}

}  // namespace

void matmul_decode(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                   int64_t C, int64_t OC) {
  if (N > kDecodeMaxRows) {
    cpu::matmul_forward(out, inp, weight, bias, N, C, OC);
    return;
  }
  // Each weight row is read once from memory and used for all N rows (it stays in L1).
#pragma omp parallel for schedule(static) if (OC * C > (1 << 14))
  for (int64_t o = 0; o < OC; ++o) {
    const float* w = weight + o * C;
    const float b = bias ? bias[o] : 0.0f;
    for (int64_t n = 0; n < N; ++n) out[n * OC + o] = dot(w, inp + n * C, C) + b;
  }
}

}  // namespace magix::cpu
