#include "backends/cpu/rope.hpp"

#include <cmath>
#include <vector>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

// transformers computes the rotation with separately rounded fp32 multiplies and
// adds; keep the compiler from fusing them into FMAs here so that the results match bit for bit.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace magix::cpu {

namespace {

inline float load(float x) {
  return x;
}
inline float load(uint16_t x) {
  return bf16_to_float(x);
}
inline void store(float& x, float v) {
  x = v;
}
inline void store(uint16_t& x, float v) {
  x = float_to_bf16(v);
}

// x (N, H, D) in place, each head's first R dims: for i < R/2, with c = table[n, i],
// s = sign * table[n, R/2 + i],
//   x[i]       <- x[i] * c - x[i + R/2] * s
//   x[i + R/2] <- x[i + R/2] * c + x[i] * s
// sign = -1 applies the transpose (the inverse rotation) instead. Dims [R, D) are not touched.
template <class T>
void rope_rotate(T* x, const float* table, int64_t N, int64_t H, int64_t D, int64_t R, float sign) {
  MAGIX_CHECK(N >= 0 && H >= 0 && R > 0 && R % 2 == 0 && R <= D,
              "rope: bad sizes N={} H={} D={} R={}", N, H, D, R);
  const int64_t half = R / 2;
#pragma omp parallel if (N * H * R > (1 << 15))
  {
    std::vector<float> sin_a(half);
#pragma omp for
    for (int64_t n = 0; n < N; n++) {
      const float* cos_a = table + n * R;
      for (int64_t i = 0; i < half; i++) sin_a[i] = sign * table[n * R + half + i];
      for (int64_t h = 0; h < H; h++) {
        T* x1 = x + (n * H + h) * D;
        T* x2 = x1 + half;
        for (int64_t i = 0; i < half; i++) {
          const float a = load(x1[i]), b = load(x2[i]);
          store(x1[i], a * cos_a[i] - b * sin_a[i]);
          store(x2[i], b * cos_a[i] + a * sin_a[i]);
        }
      }
    }
  }
}

}  // namespace

void rope_table(float* table, const int32_t* pos, const float* inv_freq, int64_t N, int64_t D) {
  MAGIX_CHECK(N >= 0 && D > 0 && D % 2 == 0, "rope: bad sizes N={} D={}", N, D);
  const int64_t half = D / 2;
#pragma omp parallel for if (N * D > (1 << 14))
  for (int64_t n = 0; n < N; n++) {
    const float p = static_cast<float>(pos[n]);
    for (int64_t i = 0; i < half; i++) {
      // cos/sin of the fp32 angle a = float(pos) * inv_freq (one fp32 multiply), evaluated in
      // double and rounded once.
      const double angle = static_cast<double>(p * inv_freq[i]);
      table[n * D + i] = static_cast<float>(std::cos(angle));
      table[n * D + half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

void rope_forward(float* x, const float* table, int64_t N, int64_t H, int64_t D, int64_t R) {
  rope_rotate(x, table, N, H, D, R, 1.0f);
}

void rope_backward(float* dx, const float* table, int64_t N, int64_t H, int64_t D, int64_t R) {
  rope_rotate(dx, table, N, H, D, R, -1.0f);
}

void rope_forward(uint16_t* x, const float* table, int64_t N, int64_t H, int64_t D, int64_t R) {
  rope_rotate(x, table, N, H, D, R, 1.0f);
}

void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                  int64_t D) {
  std::vector<float> table(static_cast<size_t>(N * D));
  rope_table(table.data(), pos, inv_freq, N, D);
  rope_forward(x, table.data(), N, H, D, D);
}

void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t N, int64_t H,
                   int64_t D) {
  std::vector<float> table(static_cast<size_t>(N * D));
  rope_table(table.data(), pos, inv_freq, N, D);
  rope_backward(dx, table.data(), N, H, D, D);
}

}  // namespace magix::cpu
