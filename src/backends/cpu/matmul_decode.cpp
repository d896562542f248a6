#include "backends/cpu/matmul_decode.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstring>
#include <vector>

#include "backends/cpu/convert.hpp"
#include "backends/cpu/matmul.hpp"
#include "magix/dtype_convert.hpp"

namespace magix::cpu {
namespace {

// Eight floats in one register (AVX2 with the project's -march; two SSE halves without).
using Vec8 = float __attribute__((vector_size(32)));

inline Vec8 load8(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Eight bf16 values widened to fp32 (exact: the bits shifted into the high half).
using U16x8 = uint16_t __attribute__((vector_size(16)));
using U32x8 = uint32_t __attribute__((vector_size(32)));

inline Vec8 load8(const uint16_t* p) {
  U16x8 h;
  std::memcpy(&h, p, sizeof h);
  const U32x8 w = __builtin_convertvector(h, U32x8) << 16;
  Vec8 v;
  std::memcpy(&v, &w, sizeof v);
  return v;
}

inline float widen(float x) {
  return x;
}
inline float widen(uint16_t x) {
  return bf16_to_float(x);
}

// a · b over C elements (a widened to fp32): four independent 8-wide accumulators, then the
// tail.
template <class W>
inline float dot(const W* a, const float* b, int64_t C) {
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
  for (; i < C; ++i) r += widen(a[i]) * b[i];
  return r;
}

template <class W>
void rows_times_weight(float* out, const float* inp, const W* weight, const float* bias, int64_t N,
                       int64_t C, int64_t OC) {
  // Each weight row is read once from memory and used for all N rows (it stays in L1).
#pragma omp parallel for schedule(static) if (OC * C > (1 << 14))
  for (int64_t o = 0; o < OC; ++o) {
    const W* w = weight + o * C;
    const float b = bias ? bias[o] : 0.0f;
    for (int64_t n = 0; n < N; ++n) out[n * OC + o] = dot(w, inp + n * C, C) + b;
  }
}

#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsic headers trip -Wmaybe-uninitialized inside target("avx512f")
// functions (their undefined-vector helpers); the values are all initialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// How far ahead of the rows being read to prefetch (bytes; a thread reads consecutive rows, so
// this reaches into its next rows). Chosen by measurement: 512, 1024, 2048, 4096 gave 47, 50,
// 51, 48 tokens/s of batch-1 decode on one thread, 95, 92, 104, 96 on two.
constexpr int kPrefetchBytes = 2048;

// Sixteen bf16 weights widened to fp32 (zero-extend, shift into the high half).
__attribute__((target("avx512f,avx512bw"))) inline __m512 widen16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// AVX-512 rows of a bf16 weight: 32 weights widened per step and used for R input rows at once,
// two fp32 accumulators per row. Sums in a different order than dot(), so results differ from
// the AVX2 path in the last bits.
template <int R>
__attribute__((target("avx512f,avx512bw"))) void dots_bf16_avx512(float* out, int64_t out_stride,
                                                                  const uint16_t* w, const float* x,
                                                                  int64_t C, float b) {
  // Two accumulators per row (32 weights per step) so that the FMA latency chain does not bound
  // a one-row call.
  __m512 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= C; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(w + i) + kPrefetchBytes, _MM_HINT_T0);
    const __m512 w0 = widen16(w + i), w1 = widen16(w + i + 16);
    for (int r = 0; r < R; ++r) {
      acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * C + i), acc0[r]);
      acc1[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + r * C + i + 16), acc1[r]);
    }
  }
  for (; i + 16 <= C; i += 16) {
    const __m512 w0 = widen16(w + i);
    for (int r = 0; r < R; ++r)
      acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * C + i), acc0[r]);
  }
  for (int r = 0; r < R; ++r) {
    float t = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
    for (int64_t k = i; k < C; ++k) t += bf16_to_float(w[k]) * x[r * C + k];
    out[r * out_stride] = t + b;
  }
}

__attribute__((target("avx512f,avx512bw"))) void rows_times_bf16_avx512(
    float* out, const float* inp, const uint16_t* weight, const float* bias, int64_t N, int64_t C,
    int64_t OC) {
#pragma omp parallel for schedule(static) if (OC * C > (1 << 14))
  for (int64_t o = 0; o < OC; ++o) {
    const uint16_t* w = weight + o * C;
    const float b = bias ? bias[o] : 0.0f;
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) dots_bf16_avx512<4>(out + n * OC + o, OC, w, inp + n * C, C, b);
    for (; n < N; ++n) dots_bf16_avx512<1>(out + n * OC + o, OC, w, inp + n * C, C, b);
  }
}

#pragma GCC diagnostic pop

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return yes;
}
#endif

}  // namespace

void matmul_decode(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                   int64_t C, int64_t OC) {
  if (N > kDecodeMaxRows) {
    cpu::matmul_forward(out, inp, weight, bias, N, C, OC);
    return;
  }
  rows_times_weight(out, inp, weight, bias, N, C, OC);
}

void matmul_decode(float* out, const float* inp, const uint16_t* weight, const float* bias,
                   int64_t N, int64_t C, int64_t OC) {
  if (N > kDecodeMaxRows) {
    // Many rows: a bf16 GEMM of the rows rounded to bf16.
    std::vector<uint16_t> rows(static_cast<size_t>(N * C));
    f32_to_bf16(inp, rows.data(), N * C);
    cpu::matmul_forward(out, rows.data(), weight, bias, N, C, OC);
    return;
  }
#if defined(__x86_64__)
  if (has_avx512()) {
    rows_times_bf16_avx512(out, inp, weight, bias, N, C, OC);
    return;
  }
#endif
  rows_times_weight(out, inp, weight, bias, N, C, OC);
}

}  // namespace magix::cpu
