// Logit soft-capping (Gemma 2): y = cap · tanh(x / cap), and its backward dx *= 1 - (y / cap)².
// fp32 arithmetic; the bf16 versions widen each element and round the result once.
#pragma once

#include <cstdint>

namespace magix::cpu {

// x (n) in place.
void softcap_forward(float* x, int64_t n, float cap);
void softcap_forward(uint16_t* x, int64_t n, float cap);

// dx (n) in place from the capped output y (n).
void softcap_backward(float* dx, const float* y, int64_t n, float cap);
void softcap_backward(uint16_t* dx, const uint16_t* y, int64_t n, float cap);

// The score cap of attention (one row): s = cap · tanh(s / cap); with `slope` (may be null)
// also 1 - tanh² per element, the derivative the backward pass needs.
void softcap_row(float* s, int64_t n, float cap, float* slope);

}  // namespace magix::cpu
