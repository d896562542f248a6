#include "backends/cpu/matmul.hpp"

#include <algorithm>

#include "backends/cpu/gemm.hpp"

namespace magix::cpu {

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int64_t C, int64_t OC) {
  // out (N, OC) = inp (N, C) · weight^T, weight (OC, C).
  gemm(false, true, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
  if (bias == nullptr) return;
#pragma omp parallel for if (N * OC > (1 << 15))
  for (int64_t n = 0; n < N; n++) {
    float* row = out + n * OC;
    for (int64_t o = 0; o < OC; o++) row[o] += bias[o];
  }
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int64_t C, int64_t OC) {
  // dinp (N, C) += dout (N, OC) · weight (OC, C)
  if (dinp != nullptr) gemm(false, false, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
  // dweight (OC, C) += dout^T (OC, N) · inp (N, C)
  if (dweight != nullptr) gemm(true, false, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
  if (dbias == nullptr) return;
  // dbias (OC) += column sums of dout: each thread owns a slice of columns and walks all rows,
  // so the sum order per column is fixed (deterministic whatever the thread count).
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (OC + kBlock - 1) / kBlock;
#pragma omp parallel for if (N * OC > (1 << 15))
  for (int64_t b = 0; b < blocks; b++) {
    const int64_t o0 = b * kBlock;
    const int64_t o1 = std::min(OC, o0 + kBlock);
    float acc[kBlock] = {};
    for (int64_t n = 0; n < N; n++) {
      const float* row = dout + n * OC;
      for (int64_t o = o0; o < o1; o++) acc[o - o0] += row[o];
    }
    for (int64_t o = o0; o < o1; o++) dbias[o] += acc[o - o0];
  }
}

}  // namespace magix::cpu
