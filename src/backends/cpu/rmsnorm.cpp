#include "backends/cpu/rmsnorm.hpp"

#include <algorithm>
#include <cmath>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix::cpu {

namespace {

inline void store(float& o, float v) {
  o = v;
}
inline void store(uint16_t& o, float v) {
  o = float_to_bf16(v);
}

template <class Out>
void rmsnorm_forward_rows(Out* out, float* rstd, const float* inp, const float* weight, int64_t N,
                          int64_t C, float eps, float offset) {
  MAGIX_CHECK(N >= 0 && C > 0, "rmsnorm_forward: bad sizes N={} C={}", N, C);
  // As HF computes it in fp32: r = 1 / sqrt(float(mean(x^2)) + eps) (eps inside the sqrt),
  // out = (x * r) * (weight + offset). The mean is accumulated in double, which is at least as
  // accurate as torch's cascade sum.
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    Out* o = out + n * C;
    double sum_sq = 0.0;
#pragma omp simd reduction(+ : sum_sq)
    for (int64_t c = 0; c < C; c++) sum_sq += static_cast<double>(x[c]) * x[c];
    const float variance = static_cast<float>(sum_sq / static_cast<double>(C));
    const float r = 1.0f / std::sqrt(variance + eps);
    rstd[n] = r;
    for (int64_t c = 0; c < C; c++) store(o[c], (x[c] * r) * (weight[c] + offset));
  }
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int64_t C, float eps, float offset) {
  rmsnorm_forward_rows(out, rstd, inp, weight, N, C, eps, offset);
}

void rmsnorm_forward(uint16_t* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int64_t C, float eps, float offset) {
  rmsnorm_forward_rows(out, rstd, inp, weight, N, C, eps, offset);
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int64_t C, float offset) {
  MAGIX_CHECK(N >= 0 && C > 0, "rmsnorm_backward: bad sizes N={} C={}", N, C);
  // y = x * r * g with g = weight + offset and r = (mean(x^2) + eps)^(-1/2), so
  // dx = r * g * dy - x * r^3 / C * sum_k(dy_k g_k x_k)   and   dweight += dy * x * r.
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    const float* dy = dout + n * C;
    float* dx = dinp + n * C;
    const float r = rstd[n];
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < C; c++) {
      dot += static_cast<double>(dy[c]) * (weight[c] + offset) * x[c];
    }
    const float k = static_cast<float>(dot * r * r * r / static_cast<double>(C));
    for (int64_t c = 0; c < C; c++) dx[c] += r * (weight[c] + offset) * dy[c] - k * x[c];
  }
  if (dweight == nullptr) return;
  // Threads split the channels so that every dweight[c] sums its rows in order (deterministic).
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t b = 0; b < blocks; b++) {
    const int64_t c0 = b * kBlock;
    const int64_t c1 = std::min(C, c0 + kBlock);
    float acc[kBlock] = {};
    for (int64_t n = 0; n < N; n++) {
      const float* x = inp + n * C;
      const float* dy = dout + n * C;
      const float r = rstd[n];
      for (int64_t c = c0; c < c1; c++) acc[c - c0] += dy[c] * x[c] * r;
    }
    for (int64_t c = c0; c < c1; c++) dweight[c] += acc[c - c0];
  }
}

}  // namespace magix::cpu
