#include "backends/cpu/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "magix/dtype_convert.hpp"

namespace magix::cpu {
namespace {

float widen(float w) {
  return w;
}
float widen(uint16_t w) {
  return bf16_to_float(w);
}
void store(float& w, float v) {
  w = v;
}
void store(uint16_t& w, float v) {
  w = float_to_bf16(v);
}

template <class W>
void adamw(W* w, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i] * k.grad_scale;
    m[i] = k.beta1 * m[i] + (1.0f - k.beta1) * gi;
    v[i] = k.beta2 * v[i] + (1.0f - k.beta2) * gi * gi;
    float mhat = m[i] / k.bias1, vhat = v[i] / k.bias2;
    float wi = widen(w[i]);
    wi -= k.lr * (mhat / (std::sqrt(vhat) + k.eps) + k.weight_decay * wi);
    store(w[i], wi);
  }
}

}  // namespace

void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, const AdamWScalars& k) {
  adamw(w, g, m, v, n, k);
}

void adamw_update(uint16_t* w, const float* g, float* m, float* v, int64_t n,
                  const AdamWScalars& k) {
  adamw(w, g, m, v, n, k);
}

double sum_of_squares(const float* g, int64_t n) {
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0.0;
    for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
      s += static_cast<double>(g[i]) * g[i];
    }
    partial[b] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace magix::cpu
