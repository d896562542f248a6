#include "backends/cpu/softcap.hpp"

#include <cmath>

#include "magix/dtype_convert.hpp"

namespace magix::cpu {
namespace {

// As transformers: x / cap, tanh, times cap (fp32).
float cap_value(float x, float cap) {
  return std::tanh(x / cap) * cap;
}

float cap_slope(float y, float cap) {
  const float t = y / cap;
  return 1.0f - t * t;
}

}  // namespace

void softcap_forward(float* x, int64_t n, float cap) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) x[i] = cap_value(x[i], cap);
}

void softcap_forward(uint16_t* x, int64_t n, float cap) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) x[i] = float_to_bf16(cap_value(bf16_to_float(x[i]), cap));
}

void softcap_backward(float* dx, const float* y, int64_t n, float cap) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) dx[i] *= cap_slope(y[i], cap);
}

void softcap_backward(uint16_t* dx, const uint16_t* y, int64_t n, float cap) {
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    dx[i] = float_to_bf16(bf16_to_float(dx[i]) * cap_slope(bf16_to_float(y[i]), cap));
  }
}

void softcap_row(float* s, int64_t n, float cap, float* slope) {
  for (int64_t i = 0; i < n; ++i) {
    const float t = std::tanh(s[i] / cap);
    s[i] = t * cap;
    if (slope) slope[i] = 1.0f - t * t;
  }
}

}  // namespace magix::cpu
