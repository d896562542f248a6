#include "backends/cpu/glu.hpp"

#include <cmath>
#include <cstring>
#include <numbers>

#include "backends/cpu/vec_math.hpp"
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

// The bf16 kernels, eight lanes at a time with vec::exp (their outputs are rounded to bf16).
// act(g) = g * s and act'(g), with s = sigmoid(k * u(g)): SiLU k u = g; GELU-tanh k u =
// 2 beta (g + kappa g^3) (see gelu_tanh above).
struct SiluVec {
  static vec::F8 sig(vec::F8 g) { return 1.0f / (1.0f + vec::exp(-g)); }
  static vec::F8 act(vec::F8 g) { return g * sig(g); }
  static vec::F8 grad(vec::F8 g) {
    const vec::F8 s = sig(g);
    return s * (1.0f + g * (1.0f - s));
  }
};

struct GeluTanhVec {
  static vec::F8 sig(vec::F8 g) {
    return 1.0f / (1.0f + vec::exp(-2.0f * kGeluBeta * (g + kGeluKappa * g * g * g)));
  }
  static vec::F8 act(vec::F8 g) { return g * sig(g); }
  static vec::F8 grad(vec::F8 g) {
    const vec::F8 s = sig(g);
    return s + 2.0f * g * s * (1.0f - s) * kGeluBeta * (1.0f + 3.0f * kGeluKappa * g * g);
  }
};

// Runs body(i) over [0, n) in blocks of 8 lanes; the last partial block goes through padded
// copies so that every element takes the same vector path.
template <class Body>
void lanes(int64_t n, Body body) {
  const int64_t full = n / 8;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t b = 0; b < full; b++) body(b * 8, 8);
  if (n % 8) body(full * 8, n % 8);
}

template <class Act>
void glu_bf16(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n) {
  lanes(n, [&](int64_t i, int64_t k) {
    uint16_t g[8] = {}, u[8] = {}, o[8];
    std::memcpy(g, gate + i, k * sizeof(uint16_t));
    std::memcpy(u, up + i, k * sizeof(uint16_t));
    vec::store_bf16(o, Act::act(vec::load_bf16(g)) * vec::load_bf16(u));
    std::memcpy(out + i, o, k * sizeof(uint16_t));
  });
}

template <class Act>
void glu_bf16_backward(uint16_t* dgate, uint16_t* dup, const float* dout, const uint16_t* gate,
                       const uint16_t* up, int64_t n) {
  lanes(n, [&](int64_t i, int64_t k) {
    uint16_t g[8] = {}, u[8] = {}, dg[8], du[8];
    float d[8] = {};
    std::memcpy(g, gate + i, k * sizeof(uint16_t));
    std::memcpy(u, up + i, k * sizeof(uint16_t));
    std::memcpy(d, dout + i, k * sizeof(float));
    const vec::F8 gv = vec::load_bf16(g), dv = vec::load(d);
    vec::store_bf16(dg, dv * vec::load_bf16(u) * Act::grad(gv));
    vec::store_bf16(du, dv * Act::act(gv));
    std::memcpy(dgate + i, dg, k * sizeof(uint16_t));
    std::memcpy(dup + i, du, k * sizeof(uint16_t));
  });
}

}  // namespace

void glu_forward(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n,
                 Activation act) {
  MAGIX_CHECK(n >= 0, "glu_forward: n={} < 0", n);
  if (act == Activation::kSilu) {
    glu_bf16<SiluVec>(out, gate, up, n);
  } else {
    glu_bf16<GeluTanhVec>(out, gate, up, n);
  }
}

void glu_backward(uint16_t* dgate, uint16_t* dup, const float* dout, const uint16_t* gate,
                  const uint16_t* up, int64_t n, Activation act) {
  MAGIX_CHECK(n >= 0, "glu_backward: n={} < 0", n);
  if (act == Activation::kSilu) {
    glu_bf16_backward<SiluVec>(dgate, dup, dout, gate, up, n);
  } else {
    glu_bf16_backward<GeluTanhVec>(dgate, dup, dout, gate, up, n);
  }
}

}  // namespace magix::cpu
