#include "backends/cpu/residual.hpp"

namespace magix::cpu {

void residual_add(float* out, const float* residual, const float* y, const float* bias, int64_t N,
                  int64_t C) {
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      float v = y[n * C + c];
      if (bias) v += bias[c];
      out[n * C + c] = residual[n * C + c] + v;
    }
  }
}

void column_sums(float* dbias, const float* dy, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) dbias[c] += dy[n * C + c];
  }
}

}  // namespace magix::cpu
