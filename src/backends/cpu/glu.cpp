#include "backends/cpu/glu.hpp"

#include <cmath>
#include <numbers>

#include "magix/dtype_convert.hpp"
#include "magix/error.hpp"

namespace magix::cpu {

namespace {

// Constants of torch's gelu(approximate="tanh"): sqrt(2/pi) and 0.044715.
constexpr float kGeluBeta = static_cast<float>(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);
constexpr float kGeluKappa = 0.044715f;
constexpr int64_t kParallelMin = 1 << 14;

inline float silu(float x) {
  return x / (1.0f + std::exp(-x));
}

// d/dx x * sigmoid(x) = s * (1 + x * (1 - s)).
inline float silu_grad(float x) {
  const float s = 1.0f / (1.0f + std::exp(-x));
  return s * (1.0f + x * (1.0f - s));
}

// 0.5 x (1 + tanh(u)) with u = beta (x + kappa x^3), evaluated as x * sigmoid(2u) (the same
// function: 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u))), which needs one exp instead of a tanh,
// several times slower in libm; the two forms agree within a few ulp.
inline float gelu_tanh(float x) {
  const float u = kGeluBeta * (x + kGeluKappa * x * x * x);
  return x / (1.0f + std::exp(-2.0f * u));
}

// d/dx x s(2u) = s + 2 x s (1 - s) u', with s = sigmoid(2u) and u' = beta (1 + 3 kappa x^2).
inline float gelu_tanh_grad(float x) {
  const float x2 = x * x;
  const float s = 1.0f / (1.0f + std::exp(-2.0f * kGeluBeta * (x + kGeluKappa * x2 * x)));
  return s + 2.0f * x * s * (1.0f - s) * kGeluBeta * (1.0f + 3.0f * kGeluKappa * x2);
}

}  // namespace

void glu_forward(float* out, const float* gate, const float* up, int64_t n, Activation act) {
  MAGIX_CHECK(n >= 0, "glu_forward: n={} < 0", n);
  if (act == Activation::kSilu) {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) out[i] = silu(gate[i]) * up[i];
  } else {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) out[i] = gelu_tanh(gate[i]) * up[i];
  }
}

void glu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                  int64_t n, Activation act) {
  MAGIX_CHECK(n >= 0, "glu_backward: n={} < 0", n);
  if (act == Activation::kSilu) {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) {
      const float g = gate[i];
      dgate[i] += dout[i] * up[i] * silu_grad(g);
      dup[i] += dout[i] * silu(g);
    }
  } else {
#pragma omp parallel for if (n > kParallelMin)
    for (int64_t i = 0; i < n; i++) {
      const float g = gate[i];
      dgate[i] += dout[i] * up[i] * gelu_tanh_grad(g);
      dup[i] += dout[i] * gelu_tanh(g);
    }
  }
}

namespace {

inline float load(uint16_t x) {
  return bf16_to_float(x);
}

template <float (*Act)(float), float (*Grad)(float)>
void glu_bf16(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) out[i] = float_to_bf16(Act(load(gate[i])) * load(up[i]));
}

template <float (*Act)(float), float (*Grad)(float)>
void glu_bf16_backward(uint16_t* dgate, uint16_t* dup, const float* dout, const uint16_t* gate,
                       const uint16_t* up, int64_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    const float g = load(gate[i]);
    dgate[i] = float_to_bf16(dout[i] * load(up[i]) * Grad(g));
    dup[i] = float_to_bf16(dout[i] * Act(g));
  }
}

}  // namespace

void glu_forward(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n,
                 Activation act) {
  MAGIX_CHECK(n >= 0, "glu_forward: n={} < 0", n);
  if (act == Activation::kSilu) {
    glu_bf16<silu, silu_grad>(out, gate, up, n);
  } else {
    glu_bf16<gelu_tanh, gelu_tanh_grad>(out, gate, up, n);
  }
}

void glu_backward(uint16_t* dgate, uint16_t* dup, const float* dout, const uint16_t* gate,
                  const uint16_t* up, int64_t n, Activation act) {
  MAGIX_CHECK(n >= 0, "glu_backward: n={} < 0", n);
  if (act == Activation::kSilu) {
    glu_bf16_backward<silu, silu_grad>(dgate, dup, dout, gate, up, n);
  } else {
    glu_bf16_backward<gelu_tanh, gelu_tanh_grad>(dgate, dup, dout, gate, up, n);
  }
}

}  // namespace magix::cpu
